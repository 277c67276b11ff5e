"""Term scales fitted to the composite probes, on fixed probe timings (nothing is timed here), and
the composite probes' models as the cost model counts them."""
from __future__ import annotations

import pytest

from edge.benchmark import BenchResult
from edge.calibrate import ProbeResult, calibrated_profile_data, derive_calibration
from edge.calibrate_derive import probe_stats
from edge.calibrate_fit import SCALE_BOUNDS, fit_term_scales, probe_terms, solve_scales
from edge.calibrate_probes import COMPOSITE_KINDS, composite_probes, default_probes, probe_spec
from edge.planner.cost import TERMS
from edge.profiles import DeviceProfile, load_profile

PROBES = {p.name: p for p in default_probes()}


def test_a_term_one_probe_under_predicts_is_scaled_and_a_pinned_one_is_not():
    # probe 1 is all term A, predicted exactly; probe 2 is half A (exact) and B predicted at half
    # its time (share 0.25 of the measurement where 0.5 was due)
    scales = solve_scales([[1.0, 0.0], [0.5, 0.25]], ridge=1e-6)
    assert scales == pytest.approx([1.0, 2.0], abs=1e-3)
    # the ridge pulls a scale the probes say little about toward 1
    assert 1.0 < solve_scales([[1.0, 0.0], [0.5, 0.25]], ridge=0.5)[1] < 2.0
    # a held term stays 1 and counts as predicted: B alone explains probe 2's missing quarter
    assert solve_scales([[0.5, 0.25]], ridge=1e-9, held=[True, False]) == pytest.approx([1.0, 2.0], abs=1e-3)
    # a probe that weighs more pulls the fit its way
    light = solve_scales([[0.0, 1.0], [0.0, 0.5]], ridge=1e-9)[1]
    heavy = solve_scales([[0.0, 1.0], [0.0, 0.5]], ridge=1e-9, weights=[1.0, 3.0])[1]
    assert light < heavy < 2.0


def test_a_negligible_term_stays_one_and_scales_stay_within_bounds():
    low, high = SCALE_BOUNDS
    # term B is under 2 % of every probe: not fitted; term A would need 10x: clipped
    assert solve_scales([[0.1, 0.01], [0.1, 0.001]], ridge=1e-6) == pytest.approx([high, 1.0])
    assert solve_scales([[10.0, 0.0]], ridge=1e-6) == pytest.approx([low, 1.0])
    assert solve_scales([]) == []


def test_composite_probes_are_whole_models_with_the_ops_real_ones_have():
    stats = {p.name: probe_stats(p) for p in composite_probes()}
    assert {p.kind for p in composite_probes()} == set(COMPOSITE_KINDS)
    assert stats["mlp"].groups["linear"].modules == 4 and stats["mlp"].epilogue_ops == 3  # ReLUs
    assert stats["convnet"].groups["conv"].modules == 7  # stem + 3 x (depthwise, pointwise)
    assert stats["convnet"].epilogue_ops >= 14  # BatchNorm and ReLU6 after every conv
    assert stats["transformer"].transcendental_ops == 4  # softmax and GELU per block
    assert stats["transformer"].matmul_ops > stats["transformer"].groups["linear"].modules  # attention
    assert stats["llamablock"].groups["linear"].modules == 14  # q, k, v, o, gate, up, down x 2
    for probe in composite_probes():
        spec = probe_spec(probe)
        out = spec.model(*spec.example_inputs).detach()
        assert out.isfinite().all() and 0.01 < float(out.std()) < 100  # weights scaled by fan-in


def _timings(per_op_factor: float) -> tuple[dict[str, list[ProbeResult]], DeviceProfile]:
    """Plain probes of a device where one op costs 1 us and matmuls run at 100 GFLOPS, and the
    composite probes timed at what that device's rates predict with every op's dispatch
    ``per_op_factor`` times the single-op probes' (as a runtime whose real ops cost more)."""
    def timed(probe, ms: float) -> ProbeResult:
        bench = BenchResult("torchscript", "dev", "0" * 64, 1, "torchscript", "1", None, {"p50": ms},
                            [ms], 1.0, 1.0, 300.0)
        return ProbeResult("torchscript", probe, bench, (ms,))

    base = 0.05
    plain = [timed(PROBES["overhead"], base + 0.001), timed(PROBES["dispatch"], base + 16 * 0.001)]
    for name in ("matmul_fp32_tiny", "matmul_fp32_small", "matmul_fp32", "matmul_fp32_wide"):
        p = PROBES[name]
        plain.append(timed(p, base + p.ops * 0.001 + p.flops / 100e9 * 1e3))
    act = PROBES["activation"]
    plain.append(timed(act, base + act.ops * 0.001 + act.bytes_read / 20e9 * 1e3))
    block = derive_calibration({"torchscript": plain})
    profile = DeviceProfile.from_dict(calibrated_profile_data(load_profile("local-x86_64"), block))
    composites = []
    for p in composite_probes():
        terms = probe_terms(timed(p, 1.0), "torchscript", profile)
        composites.append(timed(p, sum(terms.values()) + (per_op_factor - 1) * terms["dispatch"]))
    return {"torchscript": plain + composites}, profile


def test_the_fit_finds_the_dispatch_the_composite_probes_measured():
    results, profile = _timings(per_op_factor=2.0)
    scales = fit_term_scales(results, profile)["torchscript"]
    assert set(scales) == set(TERMS)
    assert scales["dispatch"] > 1.4  # the composites' extra per-op time lands on dispatch
    assert scales["matmul"] == 1.0  # held: the curve's own measurement
    assert abs(scales["overhead"] - 1.0) < 0.2  # pinned by the single-op probes
    fitted = DeviceProfile.from_dict(calibrated_profile_data(load_profile("local-x86_64"), {
        **profile.calibration, "term_scale": {"torchscript": scales}}))
    for r in results["torchscript"]:
        if r.probe.kind in COMPOSITE_KINDS:  # predicted closer than without the scales
            before = abs(sum(probe_terms(r, "torchscript", profile).values()) / r.p50_ms - 1)
            after = abs(sum(probe_terms(r, "torchscript", fitted).values()) / r.p50_ms - 1)
            assert after < before


def test_without_composite_probes_nothing_is_fitted():
    results, profile = _timings(per_op_factor=1.0)
    plain = {"torchscript": [r for r in results["torchscript"] if r.probe.kind not in COMPOSITE_KINDS]}
    assert fit_term_scales(plain, profile) == {}
