"""Language models: KV-cache memory, the largest context a budget holds, prefill and decode rooflines.

Pure arithmetic on the counted stats (:class:`~edge.planner.stats.ModelStats` of a P-token
forward), the precision assignment and the device's rates (:func:`~edge.planner.cost.device_rates`):

- KV cache = layers x 2 x KV heads x context x head dim x bytes per element, the element
  being the plan's cache type (fp32: 4, fp16: 2, q8_0: 34 / 32; the backend's default when the
  plan names none, e.g. llama.cpp's f16), the context rounded up as the runtime allocates it
  (llama.cpp: to a multiple of 256 positions).
- Decode, per token: every weight is read once (an embedding reads one row) and each layer's
  cache is read up to the current position, at the cache type's element size; the time is the
  larger of bytes / bandwidth and FLOPs / throughput (a roofline), plus the backend's fixed
  overhead per call. After ``edge profiles calibrate --llm`` (:mod:`edge.calibrate_decode`)
  each weight type's bytes are read at the rate a decoder probe of that type measured
  (``decode_gbs``), which covers the matrix-vector kernels and dequantization, and each layer
  adds the measured cost of a layer beyond its bytes (``decode_layer_ms``: the norms, RoPE, the
  cache update and attention, each small matrix-vector product's start-up).
- Prefill of P tokens: P x the per-token FLOPs / throughput (calibrated: ``prefill_gops`` per
  weight type), or the weights read once / bandwidth when that is larger (uncalibrated);
  time to first token = prefill + one call's overhead.
- Memory = the weights and activations :func:`~edge.planner.cost.predict` counts, plus the
  KV cache at the context; the largest context that fits is what the budget leaves for the
  cache divided by the cache bytes per position.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..compress.kv_cache import KV_BYTES_PER_ELEMENT
from .cost import MB, PRECISIONS, _weight_bytes, device_rates
from .stats import ModelStats

if TYPE_CHECKING:  # annotations only
    from ..profiles import DeviceProfile


@dataclass(frozen=True)
class GenerationPrediction:
    """Predicted generation figures for one plan at one context length."""

    context: int
    kv_cache_mb: float
    max_context: int | None  # the largest context the memory budget holds; None: no budget known
    ttft_ms: float
    prefill_tok_s: float
    decode_tok_s: float
    decode_bytes_per_token: float
    kv_positions: int = 0  # the positions the runtime allocates for ``context`` (its rounding)
    kv_bytes_per_element: float = 4.0
    kv_cache: str = "fp32"  # the cache's element type
    basis: str = "roofline"  # "calibrated": decode and prefill rates from the profile's decoder probes
    layer_ms: float = 0.0  # the measured cost a decode step pays per layer beyond its bytes (calibrated)

    def to_dict(self) -> dict:
        return {"context": self.context, "kv_positions": self.kv_positions or self.context, "basis": self.basis,
                "kv_cache": self.kv_cache, "kv_bytes_per_element": self.kv_bytes_per_element,
                "kv_cache_mb": round(self.kv_cache_mb, 3), "max_context": self.max_context,
                "ttft_ms": round(self.ttft_ms, 3), "prefill_tok_s": round(self.prefill_tok_s, 2),
                "decode_tok_s": round(self.decode_tok_s, 2),
                "decode_mb_per_token": round(self.decode_bytes_per_token / MB, 3),
                **({"decode_layer_ms": round(self.layer_ms, 4)} if self.layer_ms else {})}


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, context: int, bytes_per_element: float = 4.0) -> float:
    """Keys and values of every layer for ``context`` positions."""
    return 2.0 * layers * kv_heads * head_dim * context * bytes_per_element


def weight_kind(precision: str) -> str:
    """The calibration's weight type of a precision key: fp32, fp16, int8, int4 or q4_0."""
    return "int4" if precision.startswith("int4") else "int8" if precision.startswith("int8") else precision


def decode_reads(stats: ModelStats, assignment: dict[str, str], backend: str, config, position: float,
                 kv_cache: str | None = None, positions: int | None = None) -> dict[str, float]:
    """Bytes one decode token reads at ``position``, by weight type (:func:`weight_kind`): every
    weight but the embedding's at its stored size, one embedding row, the fp32 remainder (norms),
    and each layer's cache up to ``position`` at the cache type's size (all ``positions`` the
    cache holds where the backend attends over the whole static cache), the cache as "kv"."""
    from ..backends import get_backend

    if positions is not None and get_backend(backend).traits.kv_reads_whole_cache:
        position = positions
    weight_bytes = _weight_bytes(stats, assignment, backend)
    reads: dict[str, float] = {}

    def add(kind: str, n: float) -> None:
        reads[kind] = reads.get(kind, 0.0) + n

    for name, b in weight_bytes.items():
        add(weight_kind(assignment.get(name, "fp32")), b / max(config.vocab, 1) if name == "embedding" else b)
    add("fp32", stats.other_params * 4)
    kv_cache = kv_cache or get_backend(backend).kv_cache_dtypes[0]
    per_position = kv_cache_bytes(config.layers, config.kv_heads, config.head_dim, 1, KV_BYTES_PER_ELEMENT[kv_cache])
    add("kv", per_position * position)
    return reads


def head_reads(stats: ModelStats, assignment: dict[str, str], backend: str) -> dict[str, float]:
    """The output head's weight bytes by weight type (what one matrix-vector product reads)."""
    if "head" not in stats.groups:
        return {}
    return {weight_kind(assignment.get("head", "fp32")): _weight_bytes(stats, assignment, backend)["head"]}


def decode_ms(reads: dict[str, float], decode_gbs: dict[str, float]) -> float | None:
    """ms to read ``reads`` at the calibrated per-type decode rates (the cache at its own "kv"
    rate where measured; a type not measured at the fp32 rate: its bytes already count its
    size); None when the backend has no decode rates."""
    fallback = decode_gbs.get("fp32") or (min(decode_gbs.values()) if decode_gbs else None)
    if not fallback:
        return None
    return sum(b / ((decode_gbs.get(k) or fallback) * 1e6) for k, b in reads.items())


def predict_generation(stats: ModelStats, assignment: dict[str, str], backend: str, profile: DeviceProfile,
                       config, prompt_tokens: int, context: int, weights_memory_mb: float,
                       kv_cache: str | None = None, decode_position: float | None = None) -> GenerationPrediction:
    """Generation figures of a decoder (``config``: its LlamaConfig) on ``profile``.

    ``stats`` were counted on a ``prompt_tokens``-token forward; ``weights_memory_mb`` is the
    plan's memory without the KV cache (:func:`~edge.planner.cost.predict`'s peak memory);
    ``kv_cache`` is the cache's element type (None: the backend's default); ``decode_position``
    the mean position of the decoded tokens (None: a generation filling the context from the
    prompt, (P + context) / 2). Where the profile's
    calibration timed decoder probes for ``backend`` (``decode_gbs``, ``prefill_gops``), each
    weight type's bytes are read at its measured decode rate and the prompt's FLOPs run at the
    measured prefill rate; otherwise the roofline of the module docstring.
    """
    from ..backends import get_backend

    rates = device_rates(profile, backend)
    be = get_backend(backend)
    kv_cache = kv_cache or be.kv_cache_dtypes[0]
    multiple = max(1, be.traits.kv_context_multiple)
    positions = -(-context // multiple) * multiple  # the cache the runtime allocates
    position = (prompt_tokens + context) / 2 if decode_position is None else decode_position
    reads = decode_reads(stats, assignment, backend, config, position, kv_cache, positions)
    read = sum(reads.values())  # the cache read grows; its mean over a generation
    flops_s = head_s = 0.0  # seconds of multiply work per token, at each group's precision
    prefill_gops = rates.prefill_gops
    for name, g in stats.groups.items():
        precision = assignment.get(name, "fp32")
        compute = PRECISIONS[precision][2]
        if compute == "fp16" and not rates.has_fp16:
            compute = "fp32"
        measured = prefill_gops.get(weight_kind(precision)) or prefill_gops.get("fp32")
        seconds = g.flops / prompt_tokens / ((measured or rates.gops_for(name, compute)) * 1e9)
        flops_s += seconds
        head_s += seconds if name == "head" else 0.0
    flops_s += stats.other_flops / prompt_tokens / ((prefill_gops.get("fp32") or rates.gops["fp32"]) * 1e9)
    # the prompt's multiply work: every group on each position (the head once where the runtime
    # computes the last position's logits only: calibrated, a read at the head's decode rate)
    last_only = be.traits.prefill_head_last_only
    prompt_s = prompt_tokens * flops_s - ((prompt_tokens - 1) * head_s if last_only else 0.0)
    measured_ms = decode_ms(reads, rates.decode_gbs)
    overhead_ms = rates.overhead_ms
    if measured_ms is not None and not rates.overhead_measured:  # decoder probes alone: their rates hold it
        overhead_ms = 0.0

    def step_s(step_reads: dict[str, float]) -> float:
        """Seconds of one decode step that reads ``step_reads``."""
        ms = decode_ms(step_reads, rates.decode_gbs)
        if ms is not None:
            return (ms + config.layers * rates.decode_layer_ms + overhead_ms) / 1e3
        return max(sum(step_reads.values()) / (rates.bandwidth_gbs * 1e9), flops_s) + overhead_ms / 1e3

    decode_s = step_s(reads)
    if be.traits.prefill_token_by_token:  # the prompt goes through the decode step, a token at a time
        prefill_s = prompt_tokens * step_s(decode_reads(stats, assignment, backend, config, prompt_tokens / 2,
                                                        kv_cache, positions))
        ttft_ms = prefill_s * 1e3
    else:
        if measured_ms is not None:
            head_ms = decode_ms(head_reads(stats, assignment, backend), rates.decode_gbs) if last_only else None
            prefill_s = prompt_s if head_ms is None else prompt_tokens * (flops_s - head_s) + head_ms / 1e3
        else:
            weights_read = sum(decode_reads(stats, assignment, backend, config, 0, kv_cache).values())
            prefill_s = max(prompt_s, weights_read / (rates.bandwidth_gbs * 1e9))
        ttft_ms = prefill_s * 1e3 + overhead_ms
    elem = KV_BYTES_PER_ELEMENT[kv_cache]
    per_position = kv_cache_bytes(config.layers, config.kv_heads, config.head_dim, 1, elem)
    kv_mb = per_position * positions / MB
    budget = profile.memory.model_budget_mb
    max_context = None
    if budget is not None:
        max_context = max(0, int((budget - weights_memory_mb) * MB // per_position) // multiple * multiple)
    return GenerationPrediction(context=context, kv_cache_mb=kv_mb, max_context=max_context, ttft_ms=ttft_ms,
                                prefill_tok_s=prompt_tokens / prefill_s, decode_tok_s=1.0 / decode_s,
                                decode_bytes_per_token=read, kv_positions=positions,
                                kv_bytes_per_element=elem, kv_cache=kv_cache,
                                basis="roofline" if measured_ms is None else "calibrated",
                                layer_ms=0.0 if measured_ms is None else rates.decode_layer_ms)
