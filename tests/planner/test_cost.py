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
                                             "per_module_overhead_ms": {"tflite": 1.0}})
    tfl = device_rates(per_backend, "tflite")
    assert tfl.bandwidth_gbs == 0.5 and tfl.per_module_overhead_ms == 1.0  # bandwidth: the device's
    dispatch = predict(lm_stats, FP32, "tflite", per_backend).latency_ms
    assert dispatch > predict(lm_stats, FP32, "tflite", pi_zero).latency_ms + 10  # 14 modules x 1 ms


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
