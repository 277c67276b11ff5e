"""Decoder probes (`edge profiles calibrate --llm`): decode and prefill rates per weight type,
derived on fixed timings, used by the generation prediction, and measured for real on tiny
decoders (ExecuTorch and llama.cpp on `local`)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from edge.benchmark import BenchResult
from edge.calibrate import ProbeResult, calibrate, calibrated_profile_data
from edge.calibrate_decode import (DECODE_PROBES, decoder_probes, decoder_spec, decoder_stats, derive_decode,
                                   layer_ms, read_and_flops)
from edge.calibrate_derive import derive_calibration
from edge.calibrate_probes import Probe
from edge.compress import EmbeddingQuantConfig, Int8DynamicConfig, config_from_dict
from edge.errors import ConfigError
from edge.models.llama import LlamaConfig
from edge.planner.llm_cost import decode_reads, predict_generation
from edge.planner.stats import GroupStats, ModelStats, count_stats
from edge.planner.recipe_cost import assignment_of
from edge.profiles import DeviceProfile, load_profile

from planner.planner_helpers import with_calibration

INT8 = (Int8DynamicConfig(groups=("attention", "ffn", "head")).to_dict(), EmbeddingQuantConfig(bits=8).to_dict())
TINY = [Probe("decode_fp32", rows=8, width_in=64, width_out=128, layers=1, iterations=1, kind="decoder"),
        Probe("decode_int8", rows=8, width_in=64, width_out=128, layers=2, iterations=1, kind="decoder",
              recipe=INT8, tag="int8")]


# decode_int8's bytes (within 2 %) through 4x the layers: the per-layer cost
TINY_LAYERS = Probe("decode_layers", rows=8, width_in=64, width_out=128, layers=8, iterations=1, kind="decoder",
                    recipe=INT8, tag="int8", vocab=45056)
# the per-layer probe decoding further into a longer cache: the cache's own rate
TINY_KV = replace(TINY_LAYERS, name="decode_kv", context=512, decode_tokens=448)


def _result(probe: Probe, p50_ms: float, ttft_ms: float, backend: str = "executorch") -> ProbeResult:
    bench = BenchResult(backend, "dev", "0" * 64, 1, backend, "1", None, {"p50": p50_ms}, [p50_ms], 1.0, 1.0, 300.0,
                        baseline_rss_mb=120.0)
    return ProbeResult(backend, probe, bench, (p50_ms,), (ttft_ms,))


def test_each_weight_type_is_rated_on_its_own_bytes_after_the_types_already_rated():
    fp32, int8 = TINY
    r32, _, _ = read_and_flops(fp32, "executorch")
    r8, flops8, head8 = read_and_flops(int8, "executorch")
    assert set(r32) == {"fp32", "kv"} and set(r8) == {"fp32", "int8", "kv"}  # norms stay fp32
    # fp32: 2 ms less the 0.5 ms overhead; int8: 3 ms less the overhead and its fp32 bytes (and,
    # with no cache probe, the cache) at the fp32 rate
    rates = derive_decode([_result(int8, 3.0, 20.0), _result(fp32, 2.0, 10.0)], overhead_ms=0.5)
    fp32_gbs = (r32["fp32"] + r32["kv"]) / 1.5e6
    assert rates["decode_gbs"]["fp32"] == pytest.approx(fp32_gbs)
    int8_ms = 2.5 - (r8["fp32"] + r8["kv"]) / (fp32_gbs * 1e6)
    assert rates["decode_gbs"]["int8"] == pytest.approx(r8["int8"] / (int8_ms * 1e6))
    # TTFT less the overhead and the head's one matrix-vector product at the int8 rate
    assert set(head8) == {"int8"}
    head_ms = head8["int8"] / (rates["decode_gbs"]["int8"] * 1e6)
    assert rates["prefill_gops"]["int8"] == pytest.approx(flops8 / ((19.5 - head_ms) * 1e6))


def test_a_whole_cache_backend_gets_the_cache_rate_from_the_long_context_probe():
    fp32 = TINY[0]
    kv = Probe("decode_kv", rows=8, width_in=64, width_out=128, layers=1, iterations=1, kind="decoder", context=2048)
    r32 = read_and_flops(fp32, "torchscript")[0]
    rkv = read_and_flops(kv, "torchscript")[0]
    assert rkv["kv"] == pytest.approx(r32["kv"] * 2048 / 128)  # TorchScript reads every cached position
    assert read_and_flops(kv, "executorch")[0]["kv"] == pytest.approx(read_and_flops(fp32, "executorch")[0]["kv"])
    rates = derive_decode([_result(fp32, 2.0, 10.0, "torchscript"), _result(kv, 6.0, 10.0, "torchscript")], 0.5)
    kv_gbs = (rkv["kv"] - r32["kv"]) / 4e6  # the 4 ms the longer cache added
    assert rates["decode_gbs"]["kv"] == pytest.approx(kv_gbs)
    assert rates["decode_gbs"]["fp32"] == pytest.approx(r32["fp32"] / ((1.5 - r32["kv"] / (kv_gbs * 1e6)) * 1e6))


def test_a_position_reading_backend_gets_the_cache_rate_from_decoding_further_into_a_longer_cache():
    fp32 = TINY[0]  # context 128, 64 new tokens from position 8: the mean position 40
    kv = replace(fp32, name="decode_kv", context=2048, decode_tokens=960)
    r32, rkv = (read_and_flops(p, "executorch")[0] for p in (fp32, kv))
    assert rkv["kv"] == pytest.approx(r32["kv"] * (8 + 480) / (8 + 32))  # the cache up to the mean position
    rates = derive_decode([_result(fp32, 2.0, 10.0), _result(kv, 3.0, 10.0)], 0.5)
    assert rates["decode_gbs"]["kv"] == pytest.approx((rkv["kv"] - r32["kv"]) / 1e6)  # the 1 ms it added
    assert read_and_flops(kv, "llamacpp")[0]["kv"] / read_and_flops(fp32, "llamacpp")[0]["kv"] == pytest.approx(
        488 / 40)  # llama.cpp too: its flash attention skips the padded cells


def test_a_per_layer_cost_is_solved_from_the_same_bytes_through_more_layers():
    """decode_int8 (2 layers) and decode_layers (8) read about the same int8 bytes; the deeper one's
    extra time beyond its bytes is the layers' cost, and every rate is derived net of it."""
    fp32, int8 = TINY
    layers = Probe("decode_layers", rows=8, width_in=64, width_out=128, layers=8, iterations=1, kind="decoder",
                   recipe=INT8, tag="int8", vocab=128)
    # the fixed-number solve: 2 and 4 ms for 10 and 9 MB through 2 and 8 layers
    assert layer_ms([(2.0, 10e6, 2), (4.0, 9e6, 8)]) == pytest.approx((4.0 - 2.0 * 0.9) / (8 - 2 * 0.9))
    assert layer_ms([(2.0, 10e6, 2), (1.5, 10e6, 8)]) == 0.0  # faster through more layers: no cost
    results = [_result(fp32, 2.0, 10.0), _result(int8, 3.0, 20.0), _result(layers, 5.0, 20.0)]
    plain = derive_decode(results[:2], overhead_ms=0.5)
    assert "decode_layer_ms" not in plain
    rates = derive_decode(results, overhead_ms=0.5)
    r32, r8, rl = (read_and_flops(p, "executorch")[0] for p in (fp32, int8, layers))

    def left(reads, ms, fp32_gbs):  # (ms for the int8 bytes, those bytes) after the fp32 ones (and cache)
        return ms - (reads["fp32"] + reads["kv"]) / (fp32_gbs * 1e6), reads["int8"]

    # first pass without a layer cost, as derive_decode does, then the solve
    fp32_gbs = (r32["fp32"] + r32["kv"]) / 1.5e6
    (t1, b1), (t2, b2) = left(r8, 2.5, fp32_gbs), left(rl, 4.5, fp32_gbs)
    c = (t2 - t1 * b2 / b1) / (8 - 2 * b2 / b1)
    assert c > 0 and rates["decode_layer_ms"] == pytest.approx(c)
    # the rates again, each probe's step less its layers' cost
    fp32_gbs = (r32["fp32"] + r32["kv"]) / ((1.5 - c) * 1e6)
    assert rates["decode_gbs"]["fp32"] == pytest.approx(fp32_gbs)
    int8_ms = 2.5 - 2 * c - (r8["fp32"] + r8["kv"]) / (fp32_gbs * 1e6)
    assert rates["decode_gbs"]["int8"] == pytest.approx(r8["int8"] / (int8_ms * 1e6))
    assert rates["decode_gbs"]["int8"] > plain["decode_gbs"]["int8"]  # the layers' time is no longer the bytes'
    # and the block carries it for the planner (no overhead probe here: nothing subtracted)
    block = derive_calibration({"executorch": results})
    assert block["decode_layer_ms"]["executorch"] == pytest.approx(derive_decode(results, 0.0)["decode_layer_ms"],
                                                                   rel=1e-3)


def test_the_calibration_block_holds_decode_rates_and_a_decoder_only_backend_has_no_matmul_rates():
    block = derive_calibration({"llamacpp": [_result(TINY[0], 2.0, 10.0, "llamacpp")]})
    assert block["decode_gbs"]["llamacpp"]["fp32"] > 0 and block["prefill_gops"]["llamacpp"]["fp32"] > 0
    assert "llamacpp" not in block["matmul_gops"] and "overhead_ms" not in block
    assert block["runtime_memory_mb"] == {"llamacpp": 120.0}  # the runner's RSS before it loaded the decoder


def test_calibrated_decode_reads_each_group_at_its_type_rate_on_fixed_numbers():
    """Per token: 40 MB of int4 FFN at 8 GB/s, 10 MB of int8 attention at 10 GB/s, 1 MB of fp32 norms
    and fp16 head bytes at the fp32 rate (no fp16 rate measured), plus the overhead."""
    cal = {"decode_gbs": {"executorch": {"fp32": 12.0, "int8": 10.0, "int4": 8.0}},
           "prefill_gops": {"executorch": {"fp32": 50.0, "int4": 100.0}},
           "overhead_ms": {"executorch": 0.25}, "bandwidth_gbs": 1000.0}
    profile = with_calibration(load_profile("raspberry-pi-5-8gb"), cal)
    cfg = LlamaConfig(vocab=256, dim=64, layers=2, heads=4, kv_heads=2, ffn=128, prefill_tokens=16, context=64)
    mk = lambda params, flops: GroupStats(weight_params=params, read_params=params, rows=0, flops=flops, modules=1)
    ffn, attn, head = 64e6, 10e6, 1e6
    stats = ModelStats(groups={"ffn": mk(ffn, 2 * ffn * 16), "attention": mk(attn, 2 * attn * 16),
                               "head": mk(head, 2 * head * 16)}, other_params=250_000)
    assignment = {"ffn": "int4_g32", "attention": "int8", "head": "fp16"}
    gen = predict_generation(stats, assignment, "executorch", profile, cfg, 16, 64, 50.0)
    reads = decode_reads(stats, assignment, "executorch", cfg, (16 + 64) / 2)
    assert reads["int4"] == pytest.approx(ffn * 0.625) and reads["int8"] == pytest.approx(attn)
    expected_ms = (reads["int4"] / 8e6 + reads["int8"] / 10e6 + (reads["fp32"] + reads["fp16"] + reads["kv"]) / 12e6
                   + 0.25)
    assert 1e3 / gen.decode_tok_s == pytest.approx(expected_ms, rel=1e-6)
    # a measured per-layer cost is paid by each of the model's layers, on top of the bytes
    layered = predict_generation(stats, assignment, "executorch", with_calibration(
        load_profile("raspberry-pi-5-8gb"), {**cal, "decode_layer_ms": {"executorch": 0.05}}), cfg, 16, 64, 50.0)
    assert 1e3 / layered.decode_tok_s == pytest.approx(expected_ms + 2 * 0.05, rel=1e-6)
    assert layered.ttft_ms == pytest.approx(gen.ttft_ms)  # a decode term: prefill runs each layer once
    # prefill: int4 FLOPs at 100 GOPS, the rest at the fp32 rate (int8's unmeasured), not the 1000 GB/s
    # roofline; ExecuTorch's exported step runs the head once, on the last prompt position: one
    # matrix-vector product, its fp16 bytes read at the fp32 decode rate (no fp16 rate measured)
    prefill_s = 2 * 16 * (ffn / 100e9 + attn / 50e9) + reads["fp16"] / 12e9
    assert gen.ttft_ms == pytest.approx(prefill_s * 1e3 + 0.25, rel=1e-6)
    ts = predict_generation(stats, assignment, "torchscript", with_calibration(load_profile("raspberry-pi-5-8gb"), {
        **cal, "prefill_gops": {"torchscript": cal["prefill_gops"]["executorch"]},
        "overhead_ms": {"torchscript": 0.25}}), cfg, 16, 64, 50.0)
    # TorchScript (no decode rates here: the roofline) runs the head on all 16 positions
    assert ts.ttft_ms == pytest.approx(2 * 16 * (ffn / 100e9 + (attn + head) / 50e9) * 1e3 + 0.25, rel=1e-6)
    # without decoder probes the roofline applies: far faster at 1000 GB/s
    plain = predict_generation(stats, assignment, "executorch",
                               with_calibration(load_profile("raspberry-pi-5-8gb"), {"bandwidth_gbs": 1000.0}),
                               cfg, 16, 64, 50.0)
    assert plain.decode_tok_s > 5 * gen.decode_tok_s


def test_backends_get_the_decoder_probes_they_can_express():
    et = {p.name: p for p in decoder_probes("executorch")}
    assert list(et) == ["decode_fp32", "decode_int8", "decode_int4", "decode_layers", "decode_kv"]
    # ExecuTorch reads the cache up to the position: its long-cache probe decodes further into it
    assert et["decode_kv"] == replace(et["decode_layers"], name="decode_kv", context=2048, decode_tokens=960)
    # the per-layer probe: decode_int8's type and bytes a token through 4x the layers
    layers, int8 = et["decode_layers"], et["decode_int8"]
    assert layers.recipe == int8.recipe and layers.layers == 4 * int8.layers and layers.vocab < int8.vocab
    r8, rl = (sum(read_and_flops(p, "executorch")[0].values()) for p in (int8, layers))
    assert rl == pytest.approx(r8, rel=0.05)
    # no int4 in TorchScript; its masked static-cache attention gets the long-cache probe
    assert [p.name for p in decoder_probes("torchscript")] == ["decode_fp32", "decode_int8", "decode_layers",
                                                                "decode_kv"]
    # its long cache lengthens the 16-layer probe (a model's depth: a 2-layer probe overcharged the cache)
    ts = {p.name: p for p in decoder_probes("torchscript")}
    assert ts["decode_kv"] == replace(ts["decode_layers"], name="decode_kv", context=2048)
    tflite = {p.name: p.recipe for p in decoder_probes("tflite")}
    assert list(tflite) == ["decode_fp32", "decode_int8", "decode_kv"]  # no 16-layer conversion
    assert decoder_probes("tflite")[-1].layers == decoder_probes("tflite")[0].layers  # the fp32 probe's
    assert all(not c.get("groups") for c in tflite["decode_int8"])  # TFLite quantizes whole models only
    # llama.cpp: its whole-file Q4_0 (repacked kernel) apart from the per-group Q4_1, depth instead of a wide head
    llama = {p.name: p for p in decoder_probes("llamacpp")}
    assert list(llama) == ["decode_fp32", "decode_int8", "decode_int4", "decode_q4_0", "decode_layers", "decode_kv"]
    assert llama["decode_kv"] == replace(llama["decode_layers"], name="decode_kv", context=2048, decode_tokens=960)
    # its per-layer probe: the narrowest head, more layers for about the same bytes
    assert llama["decode_layers"].layers > llama["decode_int8"].layers and llama["decode_layers"].vocab == 4096
    r8, rl = (sum(read_and_flops(llama[n], "llamacpp")[0].values()) for n in ("decode_int8", "decode_layers"))
    assert rl == pytest.approx(r8, rel=0.1)
    assert {p.vocab for n, p in llama.items() if n not in ("decode_layers", "decode_kv")} == {49152}
    assert llama["decode_int4"].layers > 6
    # fp32: the head alone is past the bytes, but the layers still hold at least the head's bytes, as in a model
    r32 = read_and_flops(llama["decode_fp32"], "llamacpp")[0]["fp32"]
    assert llama["decode_fp32"].layers == 8 and r32 > 2 * 576 * 49152 * 4
    assert all(not c.get("groups") for c in llama["decode_q4_0"].recipe)
    assert set(DECODE_PROBES) == {"decode_fp32", "decode_int8", "decode_int4", "decode_q4_0", "decode_kv",
                                  "decode_layers"}
    # every probe reads tens of MB per token, beyond a small device's caches, whatever its type
    reads = [sum(read_and_flops(p, "executorch")[0].values()) for p in decoder_probes("executorch")]
    assert min(reads) > 60e6


def test_the_derivation_counts_a_probe_without_building_its_weights():
    # the counts come from the meta device: the same as the exported probe's real model, no weights made
    probe = Probe("decode_fp32", rows=16, width_in=128, width_out=256, layers=2, iterations=1, kind="decoder",
                  vocab=512, context=64)
    spec = decoder_spec(probe)
    meta, cfg = decoder_stats(probe)
    assert cfg == spec.generation.config
    assert meta == count_stats(spec.model, spec.example_inputs)
    assert meta.groups["head"].weight_params == 512 * 128 and meta.groups["head"].flops > 0


def test_probe_weights_spread_their_scales_over_matrices_and_rows_as_a_trained_models_do():
    # llama.cpp's CPU library reads every block's fp16 scale through a lookup table: probes whose
    # scales all sit in one narrow band (plain normal weights) hit it in L1 and read faster than a
    # trained model (SmolLM2's block scales move over 3 octaves from matrix to matrix)
    import torch

    probe = Probe("decode_fp32", rows=16, width_in=128, width_out=256, layers=4, iterations=1, kind="decoder",
                  vocab=512, context=64)
    spec = decoder_spec(probe)
    mats = [p for p in spec.model.parameters() if p.dim() > 1]
    per_matrix = torch.stack([p.std().log2() for p in mats])
    assert float(per_matrix.max() - per_matrix.min()) > 1.5  # normal_(0, 0.02) everywhere: ~0
    rows = mats[1].std(dim=1).log2()
    assert float(rows.quantile(0.9) - rows.quantile(0.1)) > 0.6  # one std for every row: ~0.1
    assert float(per_matrix.max()) < -2.0  # small: the activations stay finite through the blocks
    with torch.no_grad():
        logits = spec.model(*spec.example_inputs)
    assert torch.isfinite(logits).all() and float(logits.std()) > 0
    assert torch.equal(decoder_spec(probe).model.layers[0].ffn.up_proj.weight, spec.model.layers[0].ffn.up_proj.weight)


def test_a_decoder_only_backend_without_llm_has_nothing_to_calibrate():
    with pytest.raises(ConfigError, match="--llm"):
        calibrate("local", backends=["llamacpp"])


@pytest.fixture(scope="module")
def measured(tmp_path_factory, request):
    cache = getattr(request.config, "cache", None)
    exports = cache.mkdir("edge-calibrate-decode-exports") if cache else tmp_path_factory.mktemp("exports")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        mp.setenv("EDGE_CACHE_DIR", str(exports))
        overhead = Probe("overhead", rows=1, width_in=4, width_out=4, layers=1, iterations=20)
        yield calibrate("local", backends=["executorch", "llamacpp"], probes=[overhead] + TINY + [TINY_LAYERS, TINY_KV],
                        repeats=1, max_spread=None, threads=1)


def test_tiny_decoders_run_on_both_backends_and_the_profile_predicts_them_back(measured):
    block = measured.block
    assert not measured.failures
    assert set(block["decode_gbs"]) == {"executorch", "llamacpp"}
    assert "llamacpp" not in block["overhead_ms"]  # llama.cpp ran only the decoders
    profile = DeviceProfile.from_dict(calibrated_profile_data(load_profile("local-x86_64"), block))
    probes = block["provenance"]["probes"]
    for backend in ("executorch", "llamacpp"):
        assert set(probes[backend]) >= {"decode_fp32", "decode_int8"}
        for probe in TINY:
            spec = decoder_spec(probe)
            stats = count_stats(spec.model, spec.example_inputs)
            assignment = assignment_of([config_from_dict(c) for c in probe.recipe], stats, backend)
            cfg = spec.generation.config
            # the measured decode: 64 new tokens after the prompt (a context of prompt + 64 has the same mean)
            gen = predict_generation(stats, assignment, backend, profile, cfg, probe.rows, probe.rows + 64, 10.0)
            measured_ms = probes[backend][probe.name]["p50_ms"]
            assert 1e3 / gen.decode_tok_s == pytest.approx(measured_ms, rel=0.02)
        # the long-cache probe decoded its own count of tokens, the others bench's 64
        assert probes[backend]["decode_kv"]["new_tokens"] == 448 and probes[backend]["decode_int8"]["new_tokens"] == 64
    # the per-layer cost was solved on both (at least 0: a tiny decoder stays in cache)
    assert set(block["decode_layer_ms"]) == {"executorch", "llamacpp"}
    assert min(block["decode_layer_ms"].values()) >= 0.0
