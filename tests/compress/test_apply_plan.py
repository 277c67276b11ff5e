"""apply_plan: the recipe in order, per backend, returning model and export options."""
from __future__ import annotations

import pytest

from edge.compress import (EmbeddingQuantConfig, FfnPruneConfig, Int4WeightConfig, Int8DynamicConfig,
                           apply_plan)
from edge.errors import UnsupportedError

from compress_helpers import eval_score


def test_apply_plan_runs_structure_then_quantization(tiny_lm):
    plan = {"recipe": [FfnPruneConfig(fraction=0.25).to_dict(), Int8DynamicConfig().to_dict(),
                       EmbeddingQuantConfig(bits=8).to_dict()]}
    model, options = apply_plan(tiny_lm.fresh_model(), plan, "executorch", tiny_lm)
    assert model.layers[0].ffn.up_proj.out_features == 192
    assert type(model.layers[0].ffn.up_proj.weight).__name__ != "Parameter"
    assert options == {"executorch_quant_fusion": True}
    assert eval_score(tiny_lm, model) > 0.95


def test_apply_plan_for_tflite_returns_options_only(tiny_lm):
    model = tiny_lm.fresh_model()
    out, options = apply_plan(model, [Int8DynamicConfig()], "tflite", tiny_lm)
    assert out is model and options == {"tflite_quantization": "dynamic_range"}


def test_apply_plan_refuses_what_the_backend_cannot_express(tiny_lm):
    with pytest.raises(UnsupportedError, match="int4 g32 on torchscript"):
        apply_plan(tiny_lm.fresh_model(), [Int4WeightConfig()], "torchscript", tiny_lm)


def test_apply_plan_without_plan_is_identity(tiny_lm):
    model = tiny_lm.fresh_model()
    out, options = apply_plan(model, None, "executorch", tiny_lm)
    assert out is model and options == {}
