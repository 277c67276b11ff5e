"""Plans round-trip through YAML and JSON; bad content is a ConfigError that says what is wrong."""
from __future__ import annotations

import pytest

from edge.compress import EmbeddingQuantConfig, Int8DynamicConfig
from edge.errors import ConfigError
from edge.planner import Constraints, Plan, load_plan, save_plan


def _plan() -> Plan:
    return Plan(model="tiny-lm", profile="raspberry-pi-zero-2w",
                constraints={"min_accuracy": 0.99, "max_size_mb": 25},
                backend="executorch",
                recipe=[Int8DynamicConfig(groups=("ffn", "attention")), EmbeddingQuantConfig(bits=4)],
                predicted={"size_bytes": 1000, "latency_ms": 1.5, "accuracy": 0.995},
                groups={"ffn": "int8", "attention": "int8", "embedding": "int4_g32"},
                pareto=[{"backend": "tflite", "predicted": {"latency_ms": 2.0}}],
                reasons=["tflite rejected: slower"])


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip(tmp_path, suffix):
    plan = _plan()
    path = save_plan(plan, tmp_path / f"plan{suffix}")
    loaded = load_plan(path)
    assert loaded.to_dict() == plan.to_dict()
    assert loaded.recipe == plan.recipe
    assert loaded.tag == "attention:int8-embedding:int4_g32-ffn:int8"


def test_bad_plans_are_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="parse error"):
        load_plan(bad)
    data = _plan().to_dict()
    data["recipe"][0]["type"] = "int3"
    with pytest.raises(ConfigError, match="recipe.*int3"):
        Plan.from_dict(data)
    data = _plan().to_dict()
    del data["backend"]
    data["colour"] = "blue"
    with pytest.raises(ConfigError, match=r"missing \['backend'\], unknown \['colour'\]"):
        Plan.from_dict(data)
    with pytest.raises(ConfigError, match="ending in"):
        save_plan(_plan(), tmp_path / "plan.txt")
    with pytest.raises(ConfigError, match="found none"):
        load_plan(tmp_path / "missing.json")


def test_constraints_are_validated():
    with pytest.raises(ConfigError, match="min_accuracy"):
        Constraints(min_accuracy=1.5)
    with pytest.raises(ConfigError, match="max_size_mb"):
        Constraints(max_size_mb=-1)


def test_a_plan_s_kv_cache_type_is_in_its_tag_and_in_a_pareto_alternative_s():
    from edge.compare_steps import _candidate_from_pareto
    from edge.compress import Int8DynamicConfig, KvCacheConfig
    from edge.planner.plan import plan_tag

    recipe = [Int8DynamicConfig(groups=("ffn",)), KvCacheConfig("q8_0")]
    assert plan_tag(None, {"ffn": "int8", "head": "fp32"}, recipe) == "ffn:int8-kv:q8_0"
    assert plan_tag(None, {"ffn": "int8"}, [c.to_dict() for c in recipe[:1]]) == "ffn:int8"  # the default: none
    chosen = {"backend": "llamacpp", "tag": "ffn:int8-kv:q8_0", "groups": {"ffn": "int8"}, "structure": None,
              "recipe": [c.to_dict() for c in recipe]}
    alt = _candidate_from_pareto({"groups": {"ffn": "int8"}, "structure": "none", "kv_cache": "fp16",
                                  "recipe_configs": [recipe[0].to_dict()], "predicted": {}}, chosen)
    assert alt.name == alt.plan["tag"] == "ffn:int8"  # its own folder, not the chosen plan's
    assert alt.plan["reasons"] == ["Pareto alternative to llamacpp plan ffn:int8-kv:q8_0"]
