"""The predicted peak memory in two parts: the runtime's own RSS and what the model adds."""
from __future__ import annotations

import pytest

from edge.models import load_model
from edge.planner import Constraints, count_stats, predict
from edge.planner.cost import MB, Prediction, device_rates
from edge.planner.search import _with_generation

from planner_helpers import with_calibration

INT8 = {"embedding": "int8", "attention": "int8", "ffn": "int8", "head": "int8"}


@pytest.fixture(scope="module")
def lm_stats(tiny_lm):
    return count_stats(tiny_lm.model, tiny_lm.example_inputs)


def test_the_peak_is_the_runtime_plus_the_model_and_both_are_serialized(lm_stats, pi_zero):
    for backend in ("torchscript", "executorch", "tflite"):
        pred = predict(lm_stats, INT8, backend, pi_zero)
        assert pred.runtime_memory_mb == device_rates(pi_zero, backend).runtime_memory_mb > 0
        assert pred.model_memory_mb > lm_stats.peak_activation_bytes / MB
        assert pred.peak_memory_mb == pytest.approx(pred.runtime_memory_mb + pred.model_memory_mb)
        out = pred.to_dict()
        assert out["runtime_memory_mb"] == round(pred.runtime_memory_mb, 2)
        assert out["model_memory_mb"] == round(pred.model_memory_mb, 2)
        assert out["peak_memory_mb"] == pytest.approx(out["runtime_memory_mb"] + out["model_memory_mb"], abs=1e-9)


def test_compression_shrinks_the_model_share_and_calibration_moves_the_runtime(lm_stats, pi_zero):
    fp32, int8 = (predict(lm_stats, a, "executorch", pi_zero) for a in ({}, INT8))
    assert int8.runtime_memory_mb == fp32.runtime_memory_mb
    assert fp32.model_memory_mb - int8.model_memory_mb > 0.5 * lm_stats.total_params * 4 / MB  # 4 -> ~1 byte
    measured = with_calibration(pi_zero, {"runtime_memory_mb": {"executorch": 321.0}})
    cal = predict(lm_stats, INT8, "executorch", measured)
    assert cal.runtime_memory_mb == 321.0 and cal.model_memory_mb == pytest.approx(int8.model_memory_mb)
    assert cal.peak_memory_mb == pytest.approx(321.0 + int8.model_memory_mb)


def test_a_kv_cache_is_the_models_memory(pi_zero):
    spec = load_model("tiny-llama")
    stats = count_stats(spec.model.eval(), spec.example_inputs)
    pred = predict(stats, {}, "executorch", pi_zero)
    before = pred.to_dict()
    _with_generation(pred, spec, stats, {}, "executorch", pi_zero, Constraints(context=1000))
    kv_mb = pred.generation["kv_cache_mb"]
    assert kv_mb > 0.5  # 768 bytes a position x 1000
    assert pred.runtime_memory_mb == before["runtime_memory_mb"]
    assert pred.model_memory_mb == pytest.approx(before["model_memory_mb"] + kv_mb, abs=0.01)
    assert pred.peak_memory_mb == pytest.approx(pred.runtime_memory_mb + pred.model_memory_mb)


def test_a_prediction_without_parts_counts_the_peak_as_the_model():
    pred = Prediction(1000, 10.0, 1.0)
    assert (pred.runtime_memory_mb, pred.model_memory_mb) == (0.0, 10.0)
    pred.add_model_memory(2.5)
    assert (pred.peak_memory_mb, pred.model_memory_mb) == (12.5, 12.5)


def test_each_runtime_holds_the_weights_as_its_traits_say(lm_stats, pi_zero):
    from edge.backends import get_backend

    table = lm_stats.groups["embedding"].weight_params * 4 / MB
    rest = (sum(g.weight_params for n, g in lm_stats.groups.items() if n != "embedding")
            + lm_stats.other_params) * 4 / MB
    activations = lm_stats.peak_activation_bytes / MB
    for backend in ("torchscript", "executorch", "tflite"):
        t = get_backend(backend).traits
        table_residency = t.weight_residency if t.embedding_residency is None else t.embedding_residency
        expected = rest * t.weight_residency + table * table_residency + activations + t.load_memory_mb
        assert predict(lm_stats, {}, backend, pi_zero).model_memory_mb == pytest.approx(expected, rel=1e-6)
    # TFLite gathers rows from the mapped flatbuffer in place: a bigger table adds nothing resident
    assert get_backend("tflite").traits.embedding_residency == 0.0
    assert get_backend("tflite").traits.load_memory_mb > 0  # loading any model adds to the runtime's RSS
