"""Every shipped device profile is plannable: RAM, budgets, bandwidth and compute peaks are
known, cited and sane, and a plan says which device budgets it checked (or could not)."""
import math
import re

import pytest

from edge.errors import NoFeasiblePlanError
from edge.planner import Constraints, make_plan
from edge.planner.verdict import budget_checks
from edge.profiles import DeviceProfile, list_profiles, load_profile

SHIPPED = {p.name: p for p in list_profiles()}
PHONES = sorted(n for n, p in SHIPPED.items() if p.os == "android")
PHONE_BUDGET_SHARE = 0.25  # the policy the phone profiles state


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _texts(p: DeviceProfile) -> str:
    peaks = [getattr(p.compute, f).note for f in ("fp32_gflops", "fp16_gflops", "int8_gops", "fp64_hpl_gflops")]
    return " ".join([p.cpu.note, p.memory.budget_note, p.memory.bandwidth_note, p.storage.note, p.notes, *peaks])


def test_phones_are_shipped():
    assert {"pixel-8-pro", "galaxy-s23", "oneplus-12", "midrange-dimensity-7300"} <= set(PHONES)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_profile_has_ram_and_budgets(name):
    p = SHIPPED[name]
    mem = p.memory
    assert _positive(mem.total_mb) and _positive(mem.model_budget_mb) and _positive(p.storage.budget_mb)
    assert mem.model_budget_mb <= mem.total_mb
    for value in (mem.bandwidth_gbs, p.cpu.max_clock_ghz, p.compute.fp32_gflops.value):
        assert value is None or _positive(value)


@pytest.mark.parametrize("name", PHONES)
def test_phone_numbers_follow_the_policy_and_are_derived_with_arithmetic(name):
    p = SHIPPED[name]
    assert p.memory.model_budget_mb == int(p.memory.total_mb * PHONE_BUDGET_SHARE)
    assert p.storage.budget_mb == p.memory.total_mb
    assert "25%" in p.memory.budget_note
    assert _positive(p.cpu.cores) and _positive(p.cpu.max_clock_ghz)
    assert _positive(p.memory.bandwidth_gbs)
    assert re.search(r"\bderived\b|Derived", p.memory.bandwidth_note) or "Implied" in p.memory.bandwidth_note
    fp32, fp16, int8 = p.compute.fp32_gflops, p.compute.fp16_gflops, p.compute.int8_gops
    for peak in (fp32, fp16, int8):
        assert peak.kind == "derived" and _positive(peak.value)
        assert "GHz" in peak.note or "pipe-GHz" in peak.note
        assert re.search(r"= [\d.]+ G(FL)?OPS", peak.note), peak.note  # the arithmetic ends in the value
    # the same pipes x clocks: 8 fp32 flops, 16 fp16 flops, 32 int8 ops per 128-bit pipe and cycle
    assert fp16.value == pytest.approx(2 * fp32.value) and int8.value == pytest.approx(4 * fp32.value)
    assert f"{fp32.value:g}" in fp32.note.replace(".0 GFLOPS", " GFLOPS")
    # the clock the profile states is the fastest clock in the fp32 arithmetic
    clocks = [float(c) for c in re.findall(r"x ([0-9]\.[0-9]+)\b", fp32.note)]
    assert max(clocks) == pytest.approx(p.cpu.max_clock_ghz)


@pytest.mark.parametrize("name", PHONES)
def test_every_cited_tag_is_in_sources(name):
    p = SHIPPED[name]
    listed = {m for s in p.sources for m in re.findall(r"^\[([A-Z]\d+)\]", s)}
    cited = set(re.findall(r"\[([A-Z]\d+)\]", _texts(p)))
    assert cited and cited <= listed, f"cited but not in sources: {sorted(cited - listed)}"


@pytest.fixture(scope="module")
def pixel_plan(tiny_cnn):
    return make_plan(tiny_cnn, load_profile("pixel-8-pro"), backends=["tflite"], samples=8)


def test_plan_for_a_phone_checks_the_memory_budget(pixel_plan):
    assert pixel_plan.constraints["memory_budget_mb"] == 3072
    line = next(r for r in pixel_plan.reasons if r.startswith("memory budget checked"))
    assert "3072 MB" in line and "model_budget_mb" in line
    assert any(r.startswith("storage budget checked") for r in pixel_plan.reasons)
    assert not any("NOT checked" in r for r in pixel_plan.reasons)


def _without_budgets(name: str) -> DeviceProfile:
    data = load_profile(name).to_dict()
    data["memory"]["model_budget_mb"] = None
    data["storage"]["budget_mb"] = None
    return DeviceProfile.from_dict(data, source="test")


def test_a_null_budget_is_named_as_not_checked(tiny_cnn):
    profile = _without_budgets("pixel-8-pro")
    plan = make_plan(tiny_cnn, profile, backends=["tflite"], samples=8)
    unchecked = [r for r in plan.reasons if "NOT checked" in r]
    assert any(r.startswith("memory budget NOT checked") and "memory.model_budget_mb" in r for r in unchecked)
    assert any(r.startswith("storage budget NOT checked") and "storage.budget_mb" in r for r in unchecked)
    assert not any(r.startswith("memory budget checked") for r in plan.reasons)


def test_an_infeasible_plan_also_names_the_unchecked_budget(tiny_cnn):
    profile = _without_budgets("galaxy-s23")
    with pytest.raises(NoFeasiblePlanError, match="memory budget NOT checked.*memory.model_budget_mb"):
        make_plan(tiny_cnn, profile, Constraints(max_latency_ms=1e-9), backends=["tflite"], samples=8)


def test_budget_checks_without_a_prediction_lists_only_missing_budgets():
    assert budget_checks(load_profile("oneplus-12")) == []
    lines = budget_checks(_without_budgets("oneplus-12"))
    assert [line.split(":")[0] for line in lines] == ["memory budget NOT checked", "storage budget NOT checked"]
