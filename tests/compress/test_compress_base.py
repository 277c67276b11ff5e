"""Config contract: validation, JSON round trip, registry and capability table coverage."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.compress import TECHNIQUES, CompressContext, config_from_dict
from edge.backends import BACKENDS
from edge.compress.capabilities import CAPABILITIES, unsupported_in_recipe, unsupported_reason
from edge.compress.quantize import EmbeddingQuantConfig, Int4WeightConfig, Int8DynamicConfig
from edge.errors import ConfigError


def test_every_config_round_trips_through_json():
    for cls in TECHNIQUES:
        config = cls()
        data = json.loads(json.dumps(config.to_dict()))
        assert data["type"] == cls.type_tag
        assert config_from_dict(data) == config


def test_bad_values_name_field_value_and_allowed():
    with pytest.raises(ConfigError, match=r"group_size.*\[32, 64, 128\].*48"):
        Int4WeightConfig(group_size=48)
    with pytest.raises(ConfigError, match="groups.*'mlp'"):
        Int8DynamicConfig(groups=("mlp",))
    with pytest.raises(ConfigError, match=r"bits.*\[8, 4\].*2"):
        EmbeddingQuantConfig(bits=2)


def test_from_dict_rejects_unknown_type_and_keys():
    with pytest.raises(ConfigError, match="technique type"):
        config_from_dict({"type": "int3"})
    with pytest.raises(ConfigError, match="unknown keys.*bitz"):
        config_from_dict({"type": "int4_weight", "bitz": 4})
    with pytest.raises(ConfigError, match="expected backend"):
        CompressContext(backend="coreml")


def test_capability_table_covers_every_technique_and_backend():
    tags = {cls.type_tag for cls in TECHNIQUES}
    assert set(CAPABILITIES) == tags
    for table in CAPABILITIES.values():
        assert set(table) == {*BACKENDS, "eager"}  # every registered backend, and the host flavour


def test_capabilities_per_config_conditions():
    assert unsupported_reason(Int4WeightConfig(), "torchscript")
    assert unsupported_reason(Int4WeightConfig(), "executorch") is None
    assert "per-group" in unsupported_reason(Int8DynamicConfig(groups=("ffn",)), "tflite")
    assert unsupported_reason(Int8DynamicConfig(), "tflite") is None
    assert unsupported_reason(EmbeddingQuantConfig(bits=4), "torchscript")
    assert unsupported_reason(EmbeddingQuantConfig(bits=8), "torchscript") is None
    plan = {"recipe": [Int8DynamicConfig().to_dict(), {"type": "fp16"}]}
    problems = unsupported_in_recipe(plan, "tflite")
    assert len(problems) == 1 and "one whole-model quantization" in problems[0]
    assert unsupported_in_recipe(plan, "executorch") == []
    assert unsupported_in_recipe(None, "tflite") == []


def test_every_registered_technique_has_a_test():
    text = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py")
                   if p.name != Path(__file__).name)
    missing = [cls.__name__ for cls in TECHNIQUES if cls.__name__ not in text]
    assert not missing, f"techniques without a test: {missing}"
