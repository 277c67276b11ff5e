"""The calibration summary on fixed probe timings: medians of repeats, the spread recorded,
a noisy calibration refused, the matmul curve; no timing is measured here."""
from __future__ import annotations

import pytest

from edge.benchmark import BenchResult
from edge.calibrate import ProbeResult, check_noise, derive_calibration
from edge.calibrate_probes import Probe, default_probes
from edge.errors import CalibrationNoiseError

PROBES = {p.name: p for p in default_probes()}
CONV_BLOCK = Probe("conv", rows=16, width_in=32, width_out=32, layers=4, iterations=1, kind="convblock")


def result(name: str, *p50s: float, backend: str = "executorch") -> ProbeResult:
    bench = BenchResult(backend, "dev", "0" * 64, 1, backend, "1", None, {"p50": p50s[0]},
                        list(p50s), 1.0, 1.0, 300.0)
    return ProbeResult(backend, PROBES[name], bench, tuple(p50s))


def test_repeats_are_summarized_by_their_median_and_spread():
    r = result("overhead", 0.10, 0.30, 0.11)
    assert r.p50_ms == pytest.approx(0.11)  # an outlier repeat does not move the median
    assert r.spread == pytest.approx((0.30 - 0.10) / 0.11)
    assert result("overhead", 0.2).spread == 0.0  # one repeat: no spread


def quiet(noise: float = 0.0) -> list[ProbeResult]:
    """Probe timings of a device where one op costs 1 us and matmuls run at 100 GFLOPS,
    each repeated three times with +-``noise`` around the true value."""
    def timed(name: str, ms: float) -> ProbeResult:
        return result(name, ms * (1 - noise), ms, ms * (1 + noise))

    base = 0.05  # fixed per inference; the one-op overhead probe adds one op's 1 us
    out = [timed("overhead", base + 0.001), timed("dispatch", base + 16 * 0.001)]
    for name in ("matmul_fp32_small", "matmul_fp32", "matmul_fp32_wide"):
        p = PROBES[name]
        out.append(timed(name, base + p.ops * 0.001 + p.flops / 100e9 * 1e3))
    act = PROBES["activation"]
    out.append(timed("activation", base + act.ops * 0.001 + act.bytes_read / 20e9 * 1e3))
    return out


def test_the_spread_is_recorded_and_a_quiet_calibration_passes():
    results = {"executorch": quiet(0.02)}
    block = derive_calibration(results)
    assert block["repeats"] == 3
    assert block["spread"]["executorch"] == pytest.approx(0.04, rel=1e-2)
    assert block["per_op_overhead_ms"]["executorch"] == pytest.approx(0.001, rel=1e-3)
    assert block["matmul_gops"]["executorch"]["fp32"] == pytest.approx(100.0, rel=1e-2)
    assert block["memory_gbs"]["executorch"] == pytest.approx(20.0, rel=1e-2)  # from the activation probe
    curve = block["matmul_curve"]["executorch"]["fp32"]
    assert [x for x, _ in curve] == sorted(x for x, _ in curve) and len(curve) == 3
    for flops, ms in curve:  # ms per call = FLOPs at 100 GFLOPS (no fixed cost on this device)
        assert ms == pytest.approx(flops / 100e9 * 1e3, rel=1e-2)
    check_noise(results, block, max_spread=0.25)  # no error


def test_a_noisy_calibration_is_refused_naming_the_probes():
    results = {"executorch": quiet(0.2), "torchscript": [
        result("overhead", 0.05, 0.05, 0.05, backend="torchscript")]}
    block = derive_calibration(results)
    assert block["spread"]["executorch"] == pytest.approx(0.4, rel=1e-2)
    with pytest.raises(CalibrationNoiseError, match=r"too noisy.*executorch 40%.*at most 25%.*Nothing was written"):
        check_noise(results, block, max_spread=0.25)
    check_noise(results, block, max_spread=0.5)  # a looser limit accepts it
    assert CalibrationNoiseError.exit_code == 11


def test_a_bigger_call_measured_faster_is_clamped_not_extrapolated():
    results = quiet()
    wide = next(r for r in results if r.probe.name == "matmul_fp32_wide")
    wide.p50s = (0.06,)  # noise: far faster than the big probe
    curve = derive_calibration({"executorch": results})["matmul_curve"]["executorch"]["fp32"]
    assert curve[2][1] == curve[1][1]  # never faster than the smaller call


def test_probe_sizes_are_counted_as_the_cost_model_counts_a_model():
    from edge.calibrate_probes import probe_spec
    from edge.planner.stats import count_stats

    for probe in (PROBES["activation"], PROBES["conv"], PROBES["matmul_fp32_wide"], CONV_BLOCK):
        spec = probe_spec(probe)
        stats = count_stats(spec.model.eval(), spec.example_inputs)
        assert stats.ops == probe.ops
        assert stats.total_flops == pytest.approx(probe.flops)
        assert stats.memory_bytes == pytest.approx(probe.bytes_read if probe.kind == "activation"
                                                   else probe.memory_bytes)


def test_a_conv_block_rate_excludes_the_time_its_bn_and_relu_are_given():
    def run(conv_extra_ms: float) -> float:
        base = [result("overhead", 0.051), result("dispatch", 0.05 + 16 * 0.001)]
        act = PROBES["activation"]
        base.append(result("activation", 0.05 + act.ops * 0.001 + act.bytes_read / 20e9 * 1e3))
        ms = 0.05 + CONV_BLOCK.ops * 0.001 + CONV_BLOCK.flops / 50e9 * 1e3 + conv_extra_ms
        bench = BenchResult("executorch", "dev", "0" * 64, 1, "executorch", "1", None, {"p50": ms}, [ms],
                            1.0, 1.0, 300.0)
        base.append(ProbeResult("executorch", CONV_BLOCK, bench, (ms,)))
        return derive_calibration({"executorch": base})["conv_gops"]["executorch"]

    mem_ms = CONV_BLOCK.memory_bytes / 20e9 * 1e3
    assert run(mem_ms) == pytest.approx(50.0, rel=1e-2)  # BN + ReLU ran at the memory rate: 50 GFLOPS
    assert run(0.0) > 50.0  # a runtime that fuses them: the convs look faster, the block time holds


def test_transcendentals_and_pooling_get_their_own_rates():
    from edge.calibrate_derive import probe_stats

    per_op, base = 0.001, 0.05
    trans, pool, act = PROBES["transcendental"], PROBES["pool"], PROBES["activation"]
    t_st, p_st, a_st = probe_stats(trans), probe_stats(pool), probe_stats(act)
    assert t_st.transcendental_ops == 2 * trans.layers and p_st.pool_ops == pool.layers
    # a device where GELU/softmax move 5 GB/s, pooling 2 GB/s and the other memory ops 20 GB/s
    a_ms = base + act.ops * per_op + a_st.transcendental_bytes / 5e9 * 1e3 \
        + (a_st.memory_bytes - a_st.transcendental_bytes) / 20e9 * 1e3
    results = [result("overhead", base + per_op), result("dispatch", base + 16 * per_op),
               result("transcendental", base + trans.ops * per_op + t_st.transcendental_bytes / 5e9 * 1e3),
               result("pool", base + pool.ops * per_op + p_st.pool_bytes / 2e9 * 1e3),
               result("activation", a_ms)]
    block = derive_calibration({"executorch": results})
    assert block["transcendental_gbs"]["executorch"] == pytest.approx(5.0, rel=1e-2)
    assert block["pool_gbs"]["executorch"] == pytest.approx(2.0, rel=1e-2)
    assert block["memory_gbs"]["executorch"] == pytest.approx(20.0, rel=1e-2)  # GELU/softmax time taken off


def test_the_deep_probe_measures_how_much_of_its_weights_the_cache_holds():
    from edge.calibrate_derive import probe_stats
    from edge.planner.cost import MB

    deep, wide = PROBES["matmul_fp32_deep"], PROBES["matmul_fp32_wide"]
    deep_bytes, wide_bytes = (probe_stats(p).total_params * 4.0 for p in (deep, wide))
    assert deep_bytes / MB == pytest.approx(36.0, rel=1e-2)  # 16 x 384 x 1536 fp32

    def calibrated(streamed_ms: float) -> dict:
        results = quiet()  # 1 us per op, 100 GFLOPS, no fixed cost per call
        ms = 0.05 + deep.ops * 0.001 + deep.flops / 100e9 * 1e3 + streamed_ms
        return derive_calibration({"executorch": results + [result("matmul_fp32_deep", ms)]})

    held = calibrated(0.0)  # no time beyond the curve: the cache held all of it
    assert held["effective_cache_mb"] == pytest.approx(36.0, rel=1e-2) and "stream_gbs" not in held
    # 2 ms beyond the curve: what the wide probe held stayed cached, the rest came at (36 - 13.5) MB / 2 ms
    streamed = calibrated(2.0)
    assert streamed["effective_cache_mb"] == pytest.approx(wide_bytes / MB, rel=1e-2)
    assert streamed["stream_gbs"]["executorch"] == pytest.approx((deep_bytes - wide_bytes) / 2e-3 / 1e9, rel=1e-2)
