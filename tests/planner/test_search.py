"""The search: a feasible, explained plan; constraints change the choice; nothing fits is an error."""
from __future__ import annotations

import pytest

from edge.compress import apply_plan
from edge.errors import NoFeasiblePlanError
from edge.planner import Constraints, make_plan
from edge.planner.cost import MB


@pytest.fixture(scope="module")
def lm_plan(tiny_lm, pi_zero):
    return make_plan(tiny_lm, pi_zero, Constraints(min_accuracy=0.99), samples=16)


def test_plan_fits_the_device_and_explains_itself(lm_plan, pi_zero, tiny_lm):
    p = lm_plan.predicted
    assert lm_plan.backend in pi_zero.runtimes
    assert p["accuracy"] >= 0.99 and p["peak_memory_mb"] <= pi_zero.memory.model_budget_mb
    assert lm_plan.reasons[0].startswith(f"chosen {lm_plan.backend}")
    assert any("rejected" in r for r in lm_plan.reasons)
    assert any(r.startswith("verified") for r in lm_plan.reasons)
    assert any("magnitude pruning" in r for r in lm_plan.reasons)
    assert lm_plan.groups and lm_plan.recipe  # an fp32 tiny-lm is never the fastest on a Pi Zero
    # every Pareto alternative is feasible and none beats the choice on latency
    for alt in lm_plan.pareto:
        assert alt["predicted"]["latency_ms"] >= p["latency_ms"] - 1e-3
    # the chosen recipe is exportable as planned on its backend
    model, _ = apply_plan(tiny_lm.fresh_model(), lm_plan, lm_plan.backend, tiny_lm)
    assert model(*tiny_lm.example_inputs).shape == (1, 32, 256)


def test_stricter_accuracy_rejects_more(tiny_lm, pi_zero, lm_plan):
    strict = make_plan(tiny_lm, pi_zero, Constraints(min_accuracy=0.9995), samples=16)
    assert strict.predicted["accuracy"] >= 0.9995
    assert strict.predicted["size_bytes"] >= lm_plan.predicted["size_bytes"]
    assert sum("rejected: measured accuracy" in r for r in strict.reasons) > \
        sum("rejected: measured accuracy" in r for r in lm_plan.reasons)


def test_backend_restrictions_are_reasons(tiny_mlp, pi_zero):
    plan = make_plan(tiny_mlp, pi_zero, backends=["torchscript"], samples=16)
    assert plan.backend == "torchscript"
    assert any(r.startswith("executorch rejected: not in the requested backends") for r in plan.reasons)


def test_backend_not_in_profile_runtimes(tiny_mlp, pi_zero):
    data = pi_zero.to_dict()
    data["runtimes"] = ["tflite"]
    only_tflite = type(pi_zero).from_dict(data)
    plan = make_plan(tiny_mlp, only_tflite, samples=16)
    assert plan.backend == "tflite"
    assert any("torchscript rejected: not in profile" in r for r in plan.reasons)


def test_nothing_fits_says_what_would_have_to_give(tiny_lm, pi_zero):
    with pytest.raises(NoFeasiblePlanError) as info:
        make_plan(tiny_lm, pi_zero, Constraints(max_size_mb=0.05), samples=16)
    text = str(info.value)
    assert "best reachable size" in text and "limit 0.05 MB" in text
    assert "relax" in text
    with pytest.raises(NoFeasiblePlanError, match="runtimes"):
        make_plan(tiny_lm, pi_zero, backends=["coreml"], samples=16)


def test_latency_limit_is_honoured(tiny_lm, pi_zero, lm_plan):
    limit = lm_plan.predicted["latency_ms"] * 0.5
    with pytest.raises(NoFeasiblePlanError, match="best reachable latency"):
        make_plan(tiny_lm, pi_zero, Constraints(max_latency_ms=limit), samples=16)
    assert lm_plan.predicted["size_bytes"] / MB < 2


def test_the_search_takes_a_q8_0_kv_cache_when_only_it_fits_and_says_why(tiny_llama_hd32, pi_zero):
    from edge.compress import KvCacheConfig

    # 700k positions of 2 layers x 2 x 2 KV heads x 32: fp16 needs 342 MB, q8_0 182 MB of the 256
    plan = make_plan(tiny_llama_hd32, pi_zero, Constraints(min_accuracy=0.98, context=700_000),
                     backends=["llamacpp"], samples=16)
    gen = plan.predicted["generation"]
    assert plan.recipe[-1] == KvCacheConfig("q8_0") and gen["kv_cache"] == "q8_0"
    assert plan.tag.endswith("-kv:q8_0")  # the artifact's folder says so too
    assert plan.predicted["peak_memory_mb"] <= 256 and gen["kv_bytes_per_element"] == 34 / 32
    assert any(r.startswith("kv cache: q8_0 taken: ") for r in plan.reasons)
    for other in ("fp16", "fp32"):
        assert any(r.startswith(f"kv cache {other} rejected with this recipe: peak memory")
                   and "over the 256 MB budget at context 700000" in r for r in plan.reasons)
    assert any("x 1.0625 bytes (q8_0) =" in r for r in plan.reasons)
    assert all(p["kv_cache"] == "q8_0" for p in plan.pareto)  # nothing else is feasible
    _, options = apply_plan(tiny_llama_hd32.fresh_model(), plan, "llamacpp", tiny_llama_hd32)
    assert options["llamacpp_kv_cache"] == "q8_0"  # what the export hands the runner
