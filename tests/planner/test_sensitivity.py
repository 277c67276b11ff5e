"""Sensitivity: measured on calibration inputs only, per backend flavour, cached."""
from __future__ import annotations

import dataclasses

from edge.compress import EmbeddingQuantConfig, Int8DynamicConfig
from edge.planner import sensitivity
from edge.planner.sensitivity import flavour_of, measure


def test_more_aggressive_choice_measures_lower_and_is_cached(tiny_lm, monkeypatch):
    spec = dataclasses.replace(tiny_lm, eval_inputs=[])  # would fail if evaluation data were used
    int8 = measure(spec, [EmbeddingQuantConfig(bits=8)], "executorch", samples=16)
    int4 = measure(spec, [EmbeddingQuantConfig(bits=4)], "executorch", samples=16)
    assert int4 < int8 <= 1.0

    def recompute(*args, **kwargs):
        raise AssertionError("a cached measurement was computed again")

    monkeypatch.setattr(sensitivity, "compress_and_score", recompute)
    assert measure(spec, [EmbeddingQuantConfig(bits=4)], "executorch", samples=16) == int4


def test_flavour_follows_backend(tiny_lm):
    assert flavour_of("torchscript") == "torchscript" and flavour_of("tflite") == "eager"
    ts = measure(tiny_lm, [Int8DynamicConfig()], "torchscript", samples=16)
    ao = measure(tiny_lm, [Int8DynamicConfig()], "executorch", samples=16)
    assert ts != ao and min(ts, ao) > 0.95
