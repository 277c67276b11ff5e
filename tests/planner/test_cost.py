"""The cost model: size, memory and latency predictions respond to precision and profile."""
from __future__ import annotations

import pytest

from edge.planner import count_stats, predict
from edge.planner.cost import MB, device_rates, predict_size_bytes

from planner_helpers import with_calibration


@pytest.fixture(scope="module")
def lm_stats(tiny_lm):
    return count_stats(tiny_lm.model, tiny_lm.example_inputs)


FP32 = {}
INT8 = {"embedding": "int8", "attention": "int8", "ffn": "int8", "head": "int8"}
INT4 = {"embedding": "int4_g32", "attention": "int4_g32", "ffn": "int4_g32", "head": "int4_g32"}


def test_size_scales_with_bits(lm_stats):
    fp32 = predict_size_bytes(lm_stats, FP32, "executorch")
    int8 = predict_size_bytes(lm_stats, INT8, "executorch")
    int4 = predict_size_bytes(lm_stats, INT4, "executorch")
    weights = lm_stats.total_params * 4
    assert fp32 == pytest.approx(weights, rel=0.1)
    assert int8 < 0.35 * fp32 and int4 < 0.7 * int8


def test_int8_is_faster_and_smaller_in_memory_on_a_compute_bound_device(lm_stats, pi_zero):
    fp32 = predict(lm_stats, FP32, "executorch", pi_zero)
    int8 = predict(lm_stats, INT8, "executorch", pi_zero)
    assert int8.latency_ms < fp32.latency_ms
    assert int8.peak_memory_mb < fp32.peak_memory_mb
    assert any("bandwidth unknown" in n for n in fp32.notes)  # the Pi Zero profile has none


def test_fp16_helps_only_where_the_cpu_has_fp16_arithmetic(lm_stats, pi_zero, pi5):
    half = {g: "fp16" for g in INT8}
    zero32, zero16 = (predict(lm_stats, a, "executorch", pi_zero) for a in (FP32, half))
    assert zero16.latency_ms >= zero32.latency_ms * 0.99  # A53: no fp16 arithmetic
    assert zero16.peak_memory_mb == pytest.approx(zero32.peak_memory_mb)  # widened at load
    assert zero16.size_bytes < 0.6 * zero32.size_bytes
    pi5_32, pi5_16 = (predict(lm_stats, a, "executorch", pi5) for a in (FP32, half))
    assert pi5_16.latency_ms < pi5_32.latency_ms


def test_backends_differ_by_documented_overheads(lm_stats, pi5):
    ts, et = (predict(lm_stats, FP32, b, pi5) for b in ("torchscript", "executorch"))
    assert ts.latency_ms > et.latency_ms and ts.peak_memory_mb > et.peak_memory_mb - 100


def test_calibration_measurements_win(lm_stats, pi_zero):
    cal = with_calibration(pi_zero, {"bandwidth_gbs": 0.5, "matmul_gops": {"fp32": 1.0},
                                     "overhead_ms": {"executorch": 5.0}})
    rates = device_rates(cal, "executorch")
    assert rates.gops["fp32"] == 1.0 and rates.bandwidth_gbs == 0.5 and rates.overhead_ms == 5.0
    slow = predict(lm_stats, FP32, "executorch", cal)
    flops = lm_stats.total_flops
    assert slow.latency_ms >= flops / 1e9 * 1e3  # at 1 GOPS every FLOP costs a nanosecond
    assert any("calibration" in n for n in slow.notes)
    assert slow.size_bytes / MB < 2
    per_backend = with_calibration(pi_zero, {"bandwidth_gbs": 0.5, "bandwidth_gbs_by_backend": {"tflite": 3.0},
                                             "per_op_overhead_ms": {"tflite": 1.0}})
    tfl = device_rates(per_backend, "tflite")
    assert tfl.bandwidth_gbs == 0.5 and tfl.per_op_overhead_ms == 1.0  # bandwidth: the device's
    dispatch = predict(lm_stats, FP32, "tflite", per_backend).latency_ms
    assert dispatch > predict(lm_stats, FP32, "tflite", pi_zero).latency_ms + 0.9 * lm_stats.ops  # 1 ms each
    older = with_calibration(pi_zero, {"per_module_overhead_ms": {"tflite": 1.0}})  # the pre-op-count key
    assert device_rates(older, "tflite").per_op_overhead_ms == 1.0


def test_every_calibrated_term_adds_its_share(lm_stats, tiny_mlp, pi_zero):
    base = {"matmul_gops": {"executorch": {"fp32": 10.0, "int8": 20.0}}, "bandwidth_gbs": 10.0,
            "overhead_ms": {"executorch": 0.0}, "per_op_overhead_ms": {"executorch": 0.0},
            "cache_mb": 1e-6}  # weights stream at the bandwidth: memory_gbs is the memory ops' alone
    plain = predict(lm_stats, FP32, "executorch", with_calibration(pi_zero, base)).latency_ms
    fixed = with_calibration(pi_zero, {**base, "matmul_fixed_ms": {"executorch": {"fp32": 1.0, "int8": 2.0}}})
    # 22 projections + 6 attention matmuls, 1 ms each at fp32; the int8 ones 2 ms
    assert predict(lm_stats, FP32, "executorch", fixed).latency_ms == pytest.approx(plain + 28, rel=1e-6)
    assert predict(lm_stats, INT8, "executorch", fixed).latency_ms > plain + 22 * 2
    # calls smaller than the size the fixed cost was measured at pay a proportional share
    big_from = with_calibration(pi_zero, {**base, "matmul_fixed_ms": {"executorch": {"fp32": 1.0}},
                                          "fixed_cost_from": {"matmul_flops": 1e12}})
    assert predict(lm_stats, FP32, "executorch", big_from).latency_ms < plain + 0.01
    slow_memory = with_calibration(pi_zero, {**base, "memory_gbs": {"executorch": 1e-3}})  # 1 byte/us

    def memory_ms(profile) -> float:  # the memory ops' terms (the groups read activations too)
        terms = predict(lm_stats, FP32, "executorch", profile).latency_terms
        return sum(terms.get(t, 0.0) for t in ("memory", "transcendental", "pool", "epilogue"))

    extra_ms = memory_ms(slow_memory) - memory_ms(with_calibration(pi_zero, base))
    fast_memory = lm_stats.memory_bytes / 10e9 * 1e3  # the default: the device bandwidth
    assert extra_ms == pytest.approx(lm_stats.memory_bytes / 1e3 - fast_memory, rel=1e-6)
    # transcendentals (softmax, SiLU) at their own rate when calibrated
    slow_exp = with_calibration(pi_zero, {**base, "transcendental_gbs": {"executorch": 1e-3}})
    assert lm_stats.transcendental_bytes > 0
    assert predict(lm_stats, FP32, "executorch", slow_exp).latency_terms["transcendental"] == pytest.approx(
        lm_stats.transcendental_bytes / 1e3, rel=1e-6)
    mlp = count_stats(tiny_mlp.model, tiny_mlp.example_inputs)
    dispatch = with_calibration(pi_zero, {**base, "per_op_overhead_ms": {"executorch": 1.0}})
    assert predict(mlp, FP32, "executorch", dispatch).latency_ms == pytest.approx(
        predict(mlp, FP32, "executorch", with_calibration(pi_zero, base)).latency_ms + 3)
    # 5 ops, of which the 2 ReLUs are epilogues XNNPACK folds into the linears: 3 dispatched
    assert (mlp.ops, mlp.epilogue_ops) == (5, 2)


def test_weights_larger_than_the_cache_stream_from_memory(lm_stats, pi_zero):
    base = {"matmul_gops": {"fp32": 10.0}, "bandwidth_gbs": 1.0}  # compute-bound while cached
    small, large = (predict(lm_stats, FP32, "executorch", with_calibration(pi_zero, {**base, "cache_mb": mb}))
                    for mb in (0.01, 64.0))
    weights_ms = sum(g.read_params for g in lm_stats.groups.values()) * 4 / 1e9 * 1e3
    assert small.latency_ms > large.latency_ms + 0.8 * weights_ms
    # a measured effective cache holding half the weights: the other half streams at 1 GB/s
    read = sum(g.read_params for g in lm_stats.groups.values()) * 4
    half = predict(lm_stats, FP32, "executorch", with_calibration(
        pi_zero, {**base, "cache_mb": 64.0, "effective_cache_mb": read / 2 / MB}))
    assert half.latency_terms["stream"] == pytest.approx(read / 2 / 1e9 * 1e3, rel=1e-6)
    assert "stream" not in large.latency_terms  # 64 MB holds them all


def test_runtimes_that_fuse_epilogues_spend_nothing_on_them(pi_zero):
    from edge.models import load_model

    cnn = load_model("tiny-cnn")
    stats = count_stats(cnn.model, cnn.example_inputs)
    assert stats.epilogue_ops >= 8  # BatchNorm and ReLU after each conv
    fused, eager = (predict(stats, FP32, b, pi_zero).latency_terms.get("epilogue", 0.0)
                    for b in ("executorch", "torchscript"))
    assert fused == 0.0 and eager > 0.0
    # a calibration's fitted scale wins over the backend's default
    scaled = with_calibration(pi_zero, {"term_scale": {"executorch": {"epilogue": 1.0}}})
    assert predict(stats, FP32, "executorch", scaled).latency_terms["epilogue"] > 0.0


def test_convs_run_at_the_calibrated_conv_throughput(pi_zero):
    from edge.models import load_model

    cnn = load_model("tiny-cnn")
    stats = count_stats(cnn.model, cnn.example_inputs)
    cal = {"matmul_gops": {"fp32": 100.0}, "bandwidth_gbs": 1e6, "memory_gbs": {"executorch": 1e6}}
    fast, slow = (with_calibration(pi_zero, {**cal, "conv_gops": {"executorch": g}}) for g in (100.0, 1.0))
    gap_ms = (predict(stats, FP32, "executorch", slow).latency_ms
              - predict(stats, FP32, "executorch", fast).latency_ms)
    conv_flops = stats.groups["conv"].flops
    assert gap_ms == pytest.approx(conv_flops / 1e9 * 1e3 - conv_flops / 100e9 * 1e3, rel=1e-3)
    # int8 weights on a conv run the fp32 kernel (hybrid): no int8 speedup, unlike a matmul
    rates = device_rates(slow, "executorch")
    assert rates.gops_for("conv", "int8") == rates.gops_for("conv", "fp32") == 1.0
    assert rates.gops_for("linear", "int8") == rates.gops["int8"] != rates.gops["fp32"]


def test_predict_recipe_reads_the_recipe(tiny_lm, pi_zero):
    from edge.compress import EmbeddingQuantConfig, FfnPruneConfig, Int4WeightConfig, Int8DynamicConfig
    from edge.planner.recipe_cost import assignment_of, predict_recipe

    stats = count_stats(tiny_lm.model, tiny_lm.example_inputs)
    recipe = [Int4WeightConfig(groups=("ffn",)), Int8DynamicConfig(groups=("attention", "head")),
              EmbeddingQuantConfig(bits=8)]
    assert assignment_of(recipe, stats, "executorch") == {
        "ffn": "int4_g32", "attention": "int8", "head": "int8", "embedding": "int8"}
    assert assignment_of([Int8DynamicConfig()], stats, "tflite")["embedding"] == "int8"
    pruned = predict_recipe(tiny_lm, [FfnPruneConfig(fraction=0.5)], "executorch", pi_zero)
    dense = predict_recipe(tiny_lm, [], "executorch", pi_zero)
    assert pruned.size_bytes < dense.size_bytes - 3 * 3 * 96 * 128 * 4 + 1024
