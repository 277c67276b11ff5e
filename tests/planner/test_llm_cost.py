"""Language-model cost terms on fixed numbers, and the search on tiny-llama."""
import re

import pytest

from edge.errors import NoFeasiblePlanError
from edge.models import load_model
from edge.models.llama import LlamaConfig
from edge.planner import Constraints, make_plan
from edge.compress.kv_cache import KV_BYTES_PER_ELEMENT
from edge.planner.llm_cost import kv_cache_bytes, predict_generation
from edge.planner.stats import GroupStats, ModelStats
from edge.profiles import load_profile

from planner_helpers import with_calibration

MB = 1024 * 1024


def test_kv_cache_bytes_of_smollm2_at_512():
    # 30 layers x 2 x 3 KV heads x 64 head dim x 512 positions x 4 bytes
    assert kv_cache_bytes(30, 3, 64, 512) == 23_592_960
    assert kv_cache_bytes(30, 3, 64, 512, 2) == 23_592_960 / 2


def test_kv_cache_bytes_of_each_cache_type():
    # SmolLM2 at 512 positions: 30 x 2 x 3 x 64 x 512 = 5,898,240 values
    assert [kv_cache_bytes(30, 3, 64, 512, KV_BYTES_PER_ELEMENT[t]) for t in ("fp32", "fp16", "q8_0")] == [
        23_592_960, 11_796_480, 6_266_880]  # q8_0: 34 bytes per 32 values


def test_the_cache_type_sets_the_cache_memory_its_decode_read_and_the_largest_context():
    """llamacpp on fixed numbers: 10 GB/s, so decode is bandwidth-bound; a context of 1000 is 1024 positions."""
    profile = with_calibration(load_profile("raspberry-pi-5-8gb"), {
        "bandwidth_gbs": 10.0, "matmul_gops": {"llamacpp": {"fp32": 100.0}}, "overhead_ms": {"llamacpp": 0.0}})
    params, prompt = 25 * MB, 64
    stats = ModelStats(groups={"linear": GroupStats(weight_params=params, read_params=params, rows=1024,
                                                    flops=2.0 * params * prompt, modules=1)})
    cfg = LlamaConfig(vocab=256, dim=64, layers=2, heads=4, kv_heads=2, ffn=128, prefill_tokens=prompt, context=128)
    gens = {t: predict_generation(stats, {"linear": "fp32"}, "llamacpp", profile, cfg, prompt, 1000, 50.0, t)
            for t in ("fp16", "q8_0", "fp32")}
    per_position = {"fp16": 256, "q8_0": 136, "fp32": 512}  # 2 layers x 2 x 2 KV heads x 16 head dim x bytes
    budget = profile.memory.model_budget_mb
    for t, gen in gens.items():
        assert gen.to_dict()["kv_cache"] == t and gen.kv_positions == 1024
        assert gen.kv_cache_mb == pytest.approx(per_position[t] * 1024 / MB)
        assert gen.max_context == int((budget - 50.0) * MB // per_position[t]) // 256 * 256
    # the decode step reads the cache at its element size: (P + C) / 2 positions on average
    saved_s = 1 / gens["fp16"].decode_tok_s - 1 / gens["q8_0"].decode_tok_s
    assert saved_s == pytest.approx((256 - 136) * (prompt + 1000) / 2 / 10e9, rel=1e-6)
    default = predict_generation(stats, {"linear": "fp32"}, "llamacpp", profile, cfg, prompt, 1000, 50.0)
    assert default == gens["fp16"]  # llama.cpp's own cache type when the plan names none


def test_decode_is_bandwidth_bound_prefill_compute_bound_on_fixed_numbers():
    """100 MB of fp32 linear weights, 10 GB/s, 100 GFLOPS: decode reads them once per token."""
    profile = with_calibration(load_profile("raspberry-pi-5-8gb"), {
        "bandwidth_gbs": 10.0, "matmul_gops": {"executorch": {"fp32": 100.0, "int8": 200.0}},
        "overhead_ms": {"executorch": 0.0}})
    params = 25 * MB  # 100 MiB at fp32
    prompt = 64
    stats = ModelStats(groups={"linear": GroupStats(weight_params=params, read_params=params, rows=1024,
                                                    flops=2.0 * params * prompt, modules=1)})
    cfg = LlamaConfig(vocab=256, dim=64, layers=2, heads=4, kv_heads=2, ffn=128, prefill_tokens=prompt, context=128)
    gen = predict_generation(stats, {"linear": "fp32"}, "executorch", profile, cfg, prompt, 128, 50.0)
    weights = params * 4
    kv_read = kv_cache_bytes(2, 2, 16, 1) * (prompt + 128) / 2
    assert gen.decode_tok_s == pytest.approx(10e9 / (weights + kv_read), rel=1e-6)  # bytes / bandwidth
    # prefill: 64 tokens x 2 FLOPs per weight at 100 GFLOPS beats reading the weights once
    assert gen.prefill_tok_s == pytest.approx(prompt / (prompt * 2.0 * params / 100e9), rel=1e-6)
    assert gen.kv_cache_mb == pytest.approx(kv_cache_bytes(2, 2, 16, 128) / MB)
    budget = profile.memory.model_budget_mb
    assert gen.max_context == int((budget - 50.0) * MB // kv_cache_bytes(2, 2, 16, 1))
    # int8 weights read a quarter of the bytes: about 4x the decode rate
    int8 = predict_generation(stats, {"linear": "int8"}, "executorch", profile, cfg, prompt, 128, 50.0)
    assert 3.0 < int8.decode_tok_s / gen.decode_tok_s < 4.1


def test_a_runtime_that_prefills_token_by_token_takes_a_decode_step_per_prompt_token():
    """TFLite holds the decode step only: the prompt's TTFT is P decode steps (each over the whole
    static cache, so each as long as a generated token's), not a batched prefill's FLOPs."""
    profile = with_calibration(load_profile("raspberry-pi-5-8gb"), {
        "bandwidth_gbs": 10.0, "matmul_gops": {b: {"fp32": 100.0} for b in ("tflite", "executorch")},
        "overhead_ms": {"tflite": 0.5, "executorch": 0.5}})
    params, prompt = 25 * MB, 64
    stats = ModelStats(groups={"linear": GroupStats(weight_params=params, read_params=params, rows=1024,
                                                    flops=2.0 * params * prompt, modules=1)})
    cfg = LlamaConfig(vocab=256, dim=64, layers=2, heads=4, kv_heads=2, ffn=128, prefill_tokens=prompt, context=128)
    tfl = predict_generation(stats, {"linear": "fp32"}, "tflite", profile, cfg, prompt, 128, 50.0)
    assert tfl.ttft_ms == pytest.approx(prompt * 1e3 / tfl.decode_tok_s, rel=1e-9)
    assert tfl.prefill_tok_s == pytest.approx(tfl.decode_tok_s, rel=1e-9)
    batched = predict_generation(stats, {"linear": "fp32"}, "executorch", profile, cfg, prompt, 128, 50.0)
    assert batched.ttft_ms < tfl.ttft_ms / 10  # one pass over the weights for the whole prompt


@pytest.fixture(scope="module")
def tiny_llama():
    return load_model("tiny-llama")


def test_plan_for_a_language_model_counts_the_kv_cache_and_explains_it(tiny_llama):
    profile = load_profile("raspberry-pi-zero-2w")
    short = make_plan(tiny_llama, profile, Constraints(context=64), backends=["executorch"])
    long = make_plan(tiny_llama, profile, Constraints(context=100_000), backends=["executorch"])
    gs, gl = short.predicted["generation"], long.predicted["generation"]
    assert gs["context"] == 64 and gl["context"] == 100_000
    assert gl["kv_cache_mb"] == pytest.approx(768 * 100_000 / MB, rel=1e-3)  # 2 x 2 x 2 x 24 x 4 bytes a position
    assert long.predicted["peak_memory_mb"] > short.predicted["peak_memory_mb"] + 70  # 768 B x 100k positions
    assert short.predicted["latency_ms"] == pytest.approx(1e3 / gs["decode_tok_s"], rel=1e-2)
    text = "\n".join(short.reasons)
    assert "KV cache at context 64: 2 layers x 2 x 2 KV heads x 24 head dim x 64 positions x 4 bytes" in text
    assert "largest context that fits the 256 MB budget" in text and short.constraints["context"] == 64
    assert gs["basis"] == "roofline" and "`edge profiles calibrate --llm`" in text


def test_a_plan_on_a_profile_with_decoder_probes_predicts_from_their_rates(tiny_llama):
    """The same plan on a profile whose calibration timed decoder probes: 1 GB/s for every type
    (far below the Zero's roofline), so decode is slower and says which basis it used."""
    base = load_profile("raspberry-pi-zero-2w")
    rates = {"decode_gbs": {"executorch": {"fp32": 1.0, "int8": 1.0, "int4": 1.0}},
             "prefill_gops": {"executorch": {"fp32": 1.0}}}
    slow = with_calibration(base, rates)
    plain = make_plan(tiny_llama, base, Constraints(context=64), backends=["executorch"])
    measured = make_plan(tiny_llama, slow, Constraints(context=64), backends=["executorch"])
    gen = measured.predicted["generation"]
    assert gen["basis"] == "calibrated"
    assert gen["decode_tok_s"] < plain.predicted["generation"]["decode_tok_s"]
    # 1 GB/s: a token takes its bytes in ns (the backend's trait overhead on top)
    assert 1e3 / gen["decode_tok_s"] >= gen["decode_mb_per_token"] * MB / 1e6
    assert "decode rate the profile's decoder probes measured" in "\n".join(measured.reasons)
    # a measured per-layer cost: each of tiny-llama's 2 layers pays it, and the plan says so
    layered = make_plan(tiny_llama, with_calibration(base, {**rates, "decode_layer_ms": {"executorch": 0.5}}),
                        Constraints(context=64), backends=["executorch"])
    lgen = layered.predicted["generation"]
    assert 1e3 / lgen["decode_tok_s"] == pytest.approx(1e3 / gen["decode_tok_s"] + 2 * 0.5, rel=1e-3)
    assert "and 2 layers x 0.5 ms each beyond their bytes" in "\n".join(layered.reasons)


def test_nothing_fits_explains_the_memory_of_a_language_model_on_a_tiny_budget(tiny_llama):
    profile = load_profile("raspberry-pi-zero-2w")
    with pytest.raises(NoFeasiblePlanError, match=r"best reachable memory: .* MB \(limit 256 MB\)") as err:
        make_plan(tiny_llama, profile, Constraints(context=1_000_000), backends=["executorch"])
    hint = re.search(r"holds (\d+) tokens in the 256 MB budget \(asked: 1000000\); pass --context (\d+)", str(err.value))
    assert hint and hint.group(1) == hint.group(2)
    fits = make_plan(tiny_llama, profile, Constraints(context=int(hint.group(1))), backends=["executorch"])
    assert fits.predicted["peak_memory_mb"] <= 256
    with pytest.raises(NoFeasiblePlanError, match=r"best reachable decode: .* tok/s \(limit 1e\+09 tok/s\)"):
        make_plan(tiny_llama, profile, Constraints(min_decode_tok_s=1e9), backends=["executorch"])


def test_nothing_fits_offers_a_smaller_kv_cache_before_a_shorter_context(tiny_llama_hd32, pi_zero):
    def fail(**limits) -> str:
        with pytest.raises(NoFeasiblePlanError) as err:
            make_plan(tiny_llama_hd32, pi_zero, Constraints(min_accuracy=0.98, **limits), backends=["llamacpp"],
                      samples=16)
        return str(err.value)

    # 700k positions: only a q8_0 cache fits 256 MB; a size limit nobody meets keeps every plan out
    text = fail(context=700_000, max_size_mb=0.01)
    hint = re.search(r"a q8_0 KV cache holds the asked 700000 tokens where fp16 or fp32 does not: llamacpp: .*"
                     r"kv cache q8_0 needs ([\d.]+) of the 256 MB, but breaks size", text)
    assert hint and float(hint.group(1)) <= 256 and "a shorter context would fit" not in text
    # 2M positions: no cache type fits; the context that would, counted with the smallest cache
    text = fail(context=2_000_000)
    hint = re.search(r"a shorter context would fit: llamacpp: .*, kv cache q8_0 holds (\d+) tokens", text)
    assert hint and 700_000 < int(hint.group(1)) < 1_000_000 and "KV cache holds the asked" not in text


def test_cli_max_ppl_increase_sets_the_perplexity_floor(capsys):
    import json

    from edge.cli import main
    from edge.errors import ConfigError

    code = main(["plan", "tiny-llama", "--profile", "raspberry-pi-zero-2w", "--backends", "executorch",
                 "--max-ppl-increase", "5", "--context", "64", "--json"])
    assert code == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["constraints"]["min_accuracy"] == pytest.approx(1 / 1.05) and plan["constraints"]["context"] == 64
    assert plan["predicted"]["generation"]["context"] == 64
    code = main(["plan", "tiny-llama", "--profile", "raspberry-pi-zero-2w", "--max-ppl-increase", "5",
                 "--min-accuracy", "0.9"])
    assert code == ConfigError.exit_code and "no --min-accuracy beside it" in capsys.readouterr().err
