"""Decoder probes: what a language model's prefill and decode reach on a device, per weight type.

A decode step reads every weight once for one token. On a small core that is neither the
matmul throughput nor the bandwidth probe's figure: a Llama block's matrices are small (a
576-wide model's are 0.3-3.5 MB), each one a matrix-vector product with its own start-up,
dequantization and the norms, RoPE and attention between them. So ``edge profiles calibrate
--llm`` times the thing itself: a synthetic decoder (random weights, fixed seed) with a small
language model's block (SmolLM2-135M's), exported with its KV cache by
each backend at each weight type the backend expresses, and run in generation mode
(:mod:`edge.runner.runner_generate`): a 32-token prompt, 64 new tokens.

================= ==========================================================
probe             decoder (dim 576, 9/3 heads of 64, FFN 1536; SmolLM2's block)
================= ==========================================================
``decode_fp32``   2 layers, fp32
``decode_int8``   4 layers, int8 linears and head (per channel), int8 embedding
``decode_int4``   6 layers, int4 g32 linears and head, int8 embedding
``decode_q4_0``   6 layers, llama.cpp's whole-file Q4_0 (llama.cpp only: its
                  repacked kernel, not the per-group Q4_1 of ``decode_int4``)
``decode_kv``     ``decode_layers`` (else ``decode_fp32``) with a 2048-position
                  cache: read whole at every step (backends whose step attends
                  over the whole static cache), else decoding 960 tokens, to a
                  mean position of 512 instead of 64
``decode_layers`` 16 layers, int8 as ``decode_int8``, a narrower head: the
                  same bytes a token through 4x the layers (backends with
                  ``calibration_layer_probe``; probed by depth: the narrowest
                  head and as many layers as the bytes need)
================= ==========================================================

Each probe's vocabulary is sized so that a token reads ``probe_read_mb`` of weights: at
least 64 MB and half the device's last-level cache (a decode that cycles through more weights
than the cache holds misses on every one of them, which is how a language model runs on a Pi
or a phone; a 480 MB server L3 would otherwise keep a small probe cached and flatter every
rate), at most a third of the model budget. The output head is a small model's largest
matrix anyway (a fifth of SmolLM2's weights); the wide head makes the probes large at little
export cost. A runtime whose export is cheap and whose per-layer work differs from one wide
matrix's (llama.cpp: ``calibration_decoder_depth``) gets SmolLM2's head instead and as many
layers as the bytes need, and at least as many as hold the head's bytes, as a model's layers do
(fp32: 8 layers, 227 MB a token; with 2, the 113 MB head alone made the rate, and SmolLM2's F32
file, mostly layers, was predicted 22 % slow). A layer costs more than its bytes at the wide
head's rate: the norms, RoPE, the cache update and the attention between its matrices, and the
start-up of each small matrix-vector product (``benchmarks/decode_layer_cost.py``: on
ExecuTorch, the same bytes through 2 and 10 fp32, 4 and 16 int8 or int4 layers, 0.025-0.055 ms a
layer, 5-18 % of the deeper probe's step). ``decode_layers`` reads what ``decode_int8`` reads
through more layers, which separates the two: ``decode_layer_ms``, charged per layer on top of the bytes, in
the probes' derivation and in the prediction alike (a 30-layer model pays it 30 times; a
4-layer probe only 4). The probes' weights are random but spread as a trained model's do
(:func:`trained_like_`): a runtime's speed can depend on the values. llama.cpp's prebuilt CPU
library (no F16C) turns each block's fp16 scale (and Q4_1's minimum) into fp32 through a 256 KB
lookup table, so a model whose scales spread over more of the table misses L1 on more blocks: a
decoder of SmolLM2-135M's shapes, types and bytes with plain normal weights decoded the planned
Q4_1 types in 0.85x SmolLM2's time (its scales touch half the table's lines), SmolLM2 with its
blocks shuffled (the same scales) in 1.01x, the trained-like weights in 1.06x
(``benchmarks/probe_weights.py``); the planned row had been over-predicted by 13-25 % from
probes with normal weights. A backend that cannot express a type skips its probe (TorchScript:
no int4); one that quantizes whole models only (TFLite) gets the ungrouped form of the type. Exports
go through the artifact cache: a minute or two the first time, seconds after.

Derivation (:func:`derive_decode`), per backend: the bytes a token reads (weights at their
stored size, one embedding row, the cache: up to the mean position, or every position where
the backend attends over the whole cache), as :mod:`edge.planner.llm_cost` counts them,
against the median per-token decode p50 less the backend's overhead (and, where
``decode_layers`` ran, less ``decode_layer_ms`` per layer). ``decode_gbs.kv`` is
the cache's own rate, from ``decode_kv`` minus the probe it lengthened (same weights, 16x the
cache, or 8x the positions read; TorchScript's masked attention costs far more per cached byte
than a weight does, and over 8 layers 0.6-0.95x a byte what it cost over 2, so the cache is
measured at depth). A cached position costs more than its bytes at a weight's rate where the
step reads only the filled positions too: SmolLM2-135M decoding further into its cache slowed by
10-11 us a position on ExecuTorch (int4, int8; fp32 K and V, 46 KB a position) and 7-10 us on
llama.cpp (fp16, 23 KB; its flash attention skips the cells past the filled ones that it pads
the cache view to), where those bytes at a weight's ~25 GB/s would take 1-2 us
(``benchmarks/kv_position_cost.py``); charged at the fp32 rate, the cache of a model decoding
at position 160 was undercharged by about 1 ms a token against probes decoding at 64.
Without ``decode_kv`` the cache is charged at the fp32 rate. Then fp32, int8, int4, q4_0 in
turn: a probe's bytes of a type already rated (the fp32 norms, the int8 embedding row) are
charged at that rate, the rest give its own type's ``decode_gbs``. ``prefill_gops`` = the
prompt's multiply FLOPs / (the median time to first token - the overhead); where the runtime
runs the output head on the last position only (ExecuTorch, llama.cpp) the head is one
matrix-vector product, charged as a read at its type's decode rate and left out of the FLOPs.
A backend with no overhead probe (llama.cpp runs decoders only) has its per-token overhead
inside the rates, as a backend probed by depth has its per-layer cost.

``decode_layer_ms`` (:func:`layer_ms`): ``decode_int8`` and ``decode_layers`` each less the bytes
of other types at their rates leave t1 and t2 ms for b1 and b2 int8 bytes through l1 and l2
layers; t = b / rate + l x c for both gives c = (t2 - t1 b2 / b1) / (l2 - l1 b2 / b1), at least 0.
"""
from __future__ import annotations

import statistics
from dataclasses import replace
from typing import Any

from .calibrate_probes import Probe

MIN_NET_SHARE = 0.05  # the time left for a probe's own bytes is taken as at least this share

DECODER = {"dim": 576, "ffn": 1536, "vocab": 49152}
HEAD_DIM = 64
PROMPT_TOKENS, CONTEXT, KV_CONTEXT = 32, 128, 2048  # bench decodes min(64, context - prompt) new tokens
KV_DECODE_TOKENS = 960  # decode_kv where a step reads the cache up to its position: mean position 512, not 64
DECODE_LAYERS = {"fp32": 2, "int8": 4, "int4": 6, "q4_0": 6}
LAYER_PROBE_LAYERS = 16  # decode_layers: int8, 4x decode_int8's layers, the same bytes a token
MIN_READ_MB = 64.0
BYTES_PER_WEIGHT = {"fp32": 4.0, "int8": 1.0, "int4": 0.625, "q4_0": 0.5625}  # as the cost model counts them
VOCAB_STEP = 4096
# the probes' weights (trained_like_): SmolLM2-135M's Q4_1 block scales have a median that moves
# over 3 octaves from matrix to matrix (2^-6.2 to 2^-3.2) and spread 1.3-2.8 octaves (1st-99th
# percentile) within one; normal weights of one std spread 1.1 octaves and move not at all
WEIGHT_STD, WEIGHT_SPREAD_OCTAVES, ROW_SPREAD_OCTAVES = 0.02, 3.0, 0.4
DECODE_PROBES = tuple(f"decode_{d}" for d in DECODE_LAYERS) + ("decode_kv", "decode_layers")


def _recipes(dtype: str) -> list[tuple]:
    """Recipes for ``dtype`` as technique configs, the per-group form (what the planner writes)
    first, the whole-model form for backends that quantize whole models only."""
    from .compress import EmbeddingQuantConfig, Int4WeightConfig, Int8DynamicConfig

    if dtype == "int8":
        return [(Int8DynamicConfig(groups=("attention", "ffn", "head")), EmbeddingQuantConfig(bits=8)),
                (Int8DynamicConfig(),)]
    if dtype == "int4":
        return [(Int4WeightConfig(group_size=32, groups=("attention", "ffn", "head")), EmbeddingQuantConfig(bits=8)),
                (Int4WeightConfig(group_size=32),)]
    if dtype == "q4_0":  # llama.cpp's whole-file Q4_0 (its output tensor at Q8_0)
        return [(Int4WeightConfig(group_size=32),)]
    return [()]


def probe_read_mb(cache_mb: float | None, budget_mb: float | None) -> float:
    """MB a decoder probe reads per token on a device: at least MIN_READ_MB and half its last-level
    cache (a decode streams its weights only when they exceed what the cache keeps), at most a
    third of its model budget (the file also holds the embedding table)."""
    read = max(MIN_READ_MB, (cache_mb or 0.0) / 2)
    return min(read, budget_mb / 3) if budget_mb else read


def _vocab_for(dtype: str, layers: int, read_mb: float) -> int:
    """The vocabulary whose head brings a ``layers``-layer probe of ``dtype`` to ``read_mb`` per token."""
    d = DECODER["dim"]
    head_bytes = read_mb * 1e6 - layers * _layer_params() * BYTES_PER_WEIGHT[dtype]
    vocab = head_bytes / (d * BYTES_PER_WEIGHT[dtype])
    return max(VOCAB_STEP, int(-(-vocab // VOCAB_STEP)) * VOCAB_STEP)


def _layers_for(dtype: str, read_mb: float, vocab: int = DECODER["vocab"]) -> int:
    """Layers that bring a probe with a ``vocab``-wide head (SmolLM2's) to ``read_mb`` per token."""
    d = DECODER["dim"]
    head = d * vocab * BYTES_PER_WEIGHT[dtype]
    return max(2, int(-(-(read_mb * 1e6 - head) // (_layer_params() * BYTES_PER_WEIGHT[dtype]))))


def _head_layers() -> int:
    """Layers whose weights are as many as the model's head's (SmolLM2's: 8)."""
    return -(-DECODER["dim"] * DECODER["vocab"] // _layer_params())


def _layer_params() -> int:
    d, f = DECODER["dim"], DECODER["ffn"]
    kv_dim = (d // HEAD_DIM // 3) * HEAD_DIM
    return 2 * d * d + 2 * d * kv_dim + 3 * d * f


def decoder_probes(backend: str, read_mb: float = MIN_READ_MB, layers: dict[str, int] | None = None) -> list[Probe]:
    """The decoder probes ``backend`` can run (each weight type it can express, the deeper
    ``decode_layers`` and ``decode_kv`` where it has them), each reading about ``read_mb`` per token."""
    from .backends import get_backend

    be = get_backend(backend)
    deep = be.calibration_decoder_depth and layers is None
    layers = layers or DECODE_LAYERS
    out = []
    for dtype, n in layers.items():
        if dtype == "q4_0" and be.ungrouped_int4_precision != "q4_0":
            continue  # a type of its own only where the runtime's whole-file int4 is one
        vocab = _vocab_for(dtype, n, read_mb)
        if deep:  # the model's own head size; as many layers as the bytes need, at least the head's bytes
            n, vocab = max(_layers_for(dtype, read_mb), _head_layers()), DECODER["vocab"]
        for recipe in _recipes(dtype):
            if not recipe or not be.unsupported({"recipe": [c.to_dict() for c in recipe]}):
                out.append(Probe(f"decode_{dtype}", rows=PROMPT_TOKENS, width_in=DECODER["dim"],
                                 width_out=DECODER["ffn"], layers=n, iterations=1,
                                 recipe=tuple(c.to_dict() for c in recipe), tag=dtype if recipe else None,
                                 kind="decoder", vocab=vocab))
                break
    int8 = next((p for p in out if p.name == "decode_int8"), None)
    if int8 and be.calibration_layer_probe:  # the same bytes through more layers
        if deep:  # already mostly layers: the narrowest head, as many layers as the bytes need
            n, vocab = _layers_for("int8", read_mb, VOCAB_STEP), VOCAB_STEP
        else:  # 4x the layers, a narrower head
            n = LAYER_PROBE_LAYERS * int8.layers // DECODE_LAYERS["int8"]
            vocab = _vocab_for("int8", n, read_mb)
        out.append(replace(int8, name="decode_layers", layers=n, vocab=vocab))
    base = next((p for name in ("decode_layers", "decode_fp32") for p in out if p.name == name), None)
    if base and be.traits.kv_reads_whole_cache:  # a longer cache, read whole at every step
        out.append(replace(base, name="decode_kv", context=KV_CONTEXT))
    elif base:  # the cache read up to the position: decode further into a longer one
        out.append(replace(base, name="decode_kv", context=KV_CONTEXT, decode_tokens=KV_DECODE_TOKENS))
    return out


def _kv_base(by_name: dict) -> str | None:
    """The probe ``decode_kv`` lengthened the cache of (the same layers, head and weights)."""
    kv = by_name.get("decode_kv")
    for name in ("decode_layers", "decode_fp32"):
        p = by_name[name].probe if name in by_name else None
        if kv and p and (p.layers, p.vocab, p.recipe) == (kv.probe.layers, kv.probe.vocab, kv.probe.recipe):
            return name
    return None


def decoder_config(probe: Probe):
    from .models.llama import LlamaConfig

    heads = max(1, probe.width_in // HEAD_DIM)  # 576: 9 heads of 64, 3 KV heads (SmolLM2's shape)
    return LlamaConfig(vocab=probe.vocab or DECODER["vocab"], dim=probe.width_in, layers=probe.layers, heads=heads,
                       kv_heads=max(1, heads // 3), ffn=probe.width_out, rope_base=1e5,
                       prefill_tokens=probe.rows, context=probe.context or CONTEXT)


def decoder_spec(probe: Probe):
    """The probe as a language-model ModelSpec (random weights from a fixed seed, byte tokens)."""
    cfg = decoder_config(probe)
    return random_decoder(cfg, f"calibrate-{probe.name}-{probe.layers}x{cfg.dim}-v{cfg.vocab}-c{cfg.context}",
                          f"calibration decoder probe, {cfg.layers} layers")


def random_decoder(cfg, name: str, description: str, fill=None):
    """A language-model ModelSpec of a Llama with ``cfg``'s shapes whose weight matrices ``fill``
    sets in place from seed 0 (default :func:`trained_like_`), byte tokens."""
    import torch

    from .models.llama import Llama
    from .models.lm import byte_encode, lm_spec

    fill = fill or trained_like_

    def build():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = Llama(cfg)
            with torch.no_grad():
                for p in model.parameters():
                    if p.dim() > 1:
                        fill(p)
        return model.eval()

    return lm_spec(name, build(), byte_encode, description, "edge.calibrate", {"kind": "bytes", "bos_id": 0, "eos_ids": []},
                   build)


def trained_like_(weight) -> None:
    """Fill a weight matrix (in place, from torch's current seed) so that its blocks' scales spread
    as a trained model's do: a scale per matrix spread over ``WEIGHT_SPREAD_OCTAVES`` octaves, a
    scale per output row around it, normal values within a row (see the module docstring: a runtime
    that reads its fp16 block scales through a lookup table pays for the spread). A matrix's
    standard deviation stays small (0.007-0.057) so the activations stay finite through the blocks."""
    import torch

    octave = (torch.rand(()) - 0.5) * WEIGHT_SPREAD_OCTAVES
    rows = torch.exp2(torch.randn(weight.shape[0], 1) * ROW_SPREAD_OCTAVES)
    weight.normal_(0.0, 1.0).mul_(WEIGHT_STD * torch.exp2(octave) * rows)


def decoder_stats(probe: Probe):
    """The probe's :class:`~edge.planner.stats.ModelStats` (over the prompt the exported probe is
    given) and its config, counted on the meta device: the same shapes as :func:`decoder_spec`'s
    model, with no weights made (the widest probes hold gigabytes of fp32) and no arithmetic done."""
    import torch

    from .models.llama import Llama
    from .planner.stats import count_stats

    cfg = decoder_config(probe)
    with torch.device("meta"):
        model = Llama(cfg).eval()
        prompt = torch.empty(1, cfg.prefill_tokens, dtype=torch.long)
        return count_stats(model, (prompt,)), cfg


def read_and_flops(probe: Probe, backend: str) -> tuple[dict[str, float], float, dict[str, float]]:
    """Bytes one decode token reads per weight type (and "kv"), the prompt's multiply FLOPs, and
    the head's bytes by type where the runtime runs the head once (a read, not FLOPs, then)."""
    from .backends import get_backend
    from .benchmark import DEFAULT_NEW_TOKENS
    from .compress import config_from_dict
    from .planner.llm_cost import decode_reads, head_reads
    from .planner.recipe_cost import assignment_of

    stats, cfg = decoder_stats(probe)
    assignment = assignment_of([config_from_dict(c) for c in probe.recipe], stats, backend)
    new = probe.decode_tokens or min(DEFAULT_NEW_TOKENS, cfg.context - probe.rows)  # what bench decodes
    reads = decode_reads(stats, assignment, backend, cfg, probe.rows + new / 2, positions=cfg.context)
    flops = sum(g.flops for g in stats.groups.values()) + stats.other_flops
    head_read: dict[str, float] = {}
    if "head" in stats.groups and get_backend(backend).traits.prefill_head_last_only:
        flops -= stats.groups["head"].flops  # one matrix-vector product: read at the decode rate
        head_read = head_reads(stats, assignment, backend)
    return reads, flops, head_read


def _split(reads: dict[str, float], dtype: str, decode: dict[str, float]) -> tuple[float, float]:
    """(ms of the bytes of types already rated, at their rates; the bytes left for ``dtype``) of
    one probe's ``reads`` (the cache at the fp32 rate where it has no rate of its own)."""
    if "kv" not in decode:
        reads = {**reads, "fp32": reads.get("fp32", 0.0) + reads.get("kv", 0.0), "kv": 0.0}
    known_ms = sum(b / (decode[k] * 1e6) for k, b in reads.items() if k != dtype and k in decode)
    return known_ms, sum(b for k, b in reads.items() if k == dtype or k not in decode)


def layer_ms(pair: list[tuple[float, float, int]]) -> float:
    """ms a layer costs beyond its bytes, from two probes' (ms left for their own type's bytes,
    those bytes, layers): t = b / rate + layers x c for both (see the module docstring), at least 0."""
    (t1, b1, l1), (t2, b2, l2) = pair
    denom = l2 - l1 * b2 / b1 if b1 > 0 else 0.0
    return max(0.0, (t2 - t1 * b2 / b1) / denom) if denom > 0 else 0.0


def derive_decode(results: list[Any], overhead_ms: float) -> dict[str, Any]:
    """``decode_gbs`` (per weight type, and "kv"), ``prefill_gops`` (per weight type) and, where
    ``decode_layers`` ran, ``decode_layer_ms`` from one backend's decoder
    :class:`~edge.calibrate_derive.ProbeResult` s (see the module docstring)."""
    by_name = {r.probe.name: r for r in results}
    reads = {name: read_and_flops(r.probe, r.backend) for name, r in by_name.items()}
    net = {name: max(r.p50_ms - overhead_ms, MIN_NET_SHARE * r.p50_ms) for name, r in by_name.items()}
    kv: dict[str, float] = {}
    base = _kv_base(by_name)
    if base:  # same layers: a per-layer cost cancels
        extra_bytes = reads["decode_kv"][0].get("kv", 0.0) - reads[base][0].get("kv", 0.0)
        extra_ms = net["decode_kv"] - net[base]
        if extra_bytes > 0 and extra_ms > MIN_NET_SHARE * net["decode_kv"]:
            kv["kv"] = extra_bytes / (extra_ms * 1e6)
    decode, prefill = _rates(by_name, reads, net, kv, overhead_ms)
    if not ("decode_layers" in by_name and "int8" in decode):
        return {"decode_gbs": decode, "prefill_gops": prefill}
    pair = []
    for name in ("decode_int8", "decode_layers"):
        known_ms, own = _split(reads[name][0], "int8", decode)
        pair.append((net[name] - known_ms, own, by_name[name].probe.layers))
    per_layer = layer_ms(pair)
    if per_layer > 0:  # every probe's step less its layers' share, the rates again
        net = {name: max(t - by_name[name].probe.layers * per_layer, MIN_NET_SHARE * t) for name, t in net.items()}
        decode, prefill = _rates(by_name, reads, net, kv, overhead_ms)
    return {"decode_gbs": decode, "prefill_gops": prefill, "decode_layer_ms": per_layer}


def _rates(by_name: dict, reads: dict, net: dict[str, float], kv: dict[str, float],
           overhead_ms: float) -> tuple[dict[str, float], dict[str, float]]:
    """decode_gbs and prefill_gops: fp32, int8, int4, q4_0 in turn, each on the bytes the types
    already rated leave (``net``: each probe's step less the overhead and its layers' cost)."""
    decode, prefill = dict(kv), {}
    for name in DECODE_PROBES:
        dtype = name.removeprefix("decode_")
        if name not in by_name or dtype not in DECODE_LAYERS:
            continue
        own_reads, prompt_flops, head_read = reads[name]
        known_ms, own = _split(own_reads, dtype, decode)
        decode[dtype] = own / (max(net[name] - known_ms, MIN_NET_SHARE * net[name]) * 1e6)
        ttfts = by_name[name].ttfts
        if ttfts:
            ttft = statistics.median(ttfts)
            head_ms = sum(b / (decode.get(k, decode[dtype]) * 1e6) for k, b in head_read.items())
            prefill[dtype] = prompt_flops / (max(ttft - overhead_ms - head_ms, MIN_NET_SHARE * ttft) * 1e6)
    return decode, prefill
