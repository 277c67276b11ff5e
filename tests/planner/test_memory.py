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


def test_llamacpp_whole_file_q4_0_is_its_own_type_with_a_repacked_copy_where_the_cpu_repacks():
    """A whole-file int4 GGUF is Q4_0 (18 bytes per 32 weights, the output tensor at Q8_0); llama.cpp
    repacks Q4_0 for AVX2 or Arm dot products, so those weights are resident twice there."""
    from edge.compress import Int4WeightConfig
    from edge.planner.recipe_cost import assignment_of
    from edge.profiles import load_profile

    spec = load_model("tiny-llama")
    stats = count_stats(spec.model, spec.example_inputs)
    whole = assignment_of([Int4WeightConfig(group_size=32)], stats, "llamacpp")
    assert whole["attention"] == whole["ffn"] == "q4_0" and whole["head"] == "int8"
    grouped = assignment_of([Int4WeightConfig(group_size=32, groups=("attention", "ffn"))], stats, "llamacpp")
    assert grouped["ffn"] == "int4_g32"  # per group: Q4_1, no repack
    q4 = stats.groups["attention"].weight_params + stats.groups["ffn"].weight_params
    pi5, pi4 = load_profile("raspberry-pi-5-8gb"), load_profile("raspberry-pi-4-4gb")  # A76 dotprod; A72 none
    extra = predict(stats, whole, "llamacpp", pi5).model_memory_mb - predict(stats, whole, "llamacpp", pi4).model_memory_mb
    assert extra == pytest.approx(q4 * 18 / 32 / MB, rel=1e-6)
    assert predict(stats, grouped, "llamacpp", pi5).model_memory_mb == pytest.approx(
        predict(stats, grouped, "llamacpp", pi4).model_memory_mb)


def test_a_tied_head_takes_the_embeddings_type_where_stored_once_and_llamacpp_keeps_few_activations(pi_zero):
    from dataclasses import replace

    from edge.compress import EmbeddingQuantConfig
    from edge.planner.recipe_cost import assignment_of
    from edge.planner.stats import GroupStats, ModelStats

    stats = ModelStats(groups={"embedding": GroupStats(weight_params=1000, read_params=10, rows=10),
                               "head": GroupStats(weight_params=1000, read_params=1000, rows=10, shared_params=1000)})
    recipe = [EmbeddingQuantConfig(bits=8)]
    assert assignment_of(recipe, stats, "llamacpp") == {"embedding": "int8", "head": "int8"}  # one GGUF tensor
    assert assignment_of(recipe, stats, "executorch") == {"embedding": "int8"}  # the head keeps its own copy
    # llama.cpp keeps a tenth of a full forward's counted activations resident; ExecuTorch all of them
    busy = replace(stats, peak_activation_bytes=10 * MB)
    for backend, share in (("llamacpp", 0.1), ("executorch", 1.0)):
        grown = predict(busy, {}, backend, pi_zero).model_memory_mb - predict(stats, {}, backend, pi_zero).model_memory_mb
        assert grown == pytest.approx(10 * share)
