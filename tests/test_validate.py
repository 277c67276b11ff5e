import numpy as np
import pytest

from edge.backends.base import from_artifact_outputs, to_artifact_inputs
from edge.errors import ConfigError, ValidationError
from edge.exporter import export
from edge.models import load_model
from edge.validate import TOLERANCES, Tolerance, precision_of, reference_outputs, validate


@pytest.fixture(scope="module")
def cnn_tflite(tmp_path_factory, artifact_cache):
    # an NHWC artifact: validation has to transpose inputs for it
    return export("tiny-cnn", "tflite", tmp_path_factory.mktemp("val"), cache_dir=artifact_cache)


def test_validate_runs_nhwc_artifact_against_eager(cnn_tflite):
    spec = load_model("tiny-cnn")
    result = validate(cnn_tflite, spec)
    assert result["passed"] and result["samples"] == len(spec.eval_inputs)
    assert result["metric"] == "top1" and result["score"] == 1.0
    assert result["max_abs_error"] < 1e-4 and result["cosine"] > 0.9999
    assert result["tolerance"] == {"max_rel_error": 1e-3, "min_cosine": 0.9999, "min_score": 0.98}


def test_validation_failure_says_by_how_much_and_the_tolerance(cnn_tflite):
    spec = load_model("tiny-cnn")
    refs = reference_outputs(spec, limit=16)
    rng = np.random.default_rng(0)
    noisy = [[r[0] + rng.normal(0, 0.05 * r[0].std(), r[0].shape).astype(np.float32)] for r in refs]
    with pytest.raises(ValidationError, match=r"max abs error .* tolerance 0\.001.*cosine .* below 0\.9999"):
        validate(cnn_tflite, spec, reference_outputs=noisy, limit=16)
    loose = validate(cnn_tflite, spec, reference_outputs=noisy, limit=16, tolerance={"min_cosine": 0.5})
    assert loose["passed"] and loose["max_abs_error"] > 1e-3


def test_tolerance_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="max_abs.*max_rel_error"):
        Tolerance.from_dict({"max_abs": 1.0})


def test_precision_follows_compression_and_options():
    assert precision_of({"compression": None}) == "fp32"
    assert precision_of({"compression": {"recipe": [{"type": "int8_dynamic"}]}}) == "int8"
    assert precision_of({"compression": {"recipe": [{"type": "int4_weight"}, {"type": "int8_dynamic"}]}}) == "int4"
    assert precision_of({"compression": {"recipe": [{"type": "embedding_quant", "bits": 4}]}}) == "int4"
    assert precision_of({"compression": {"recipe": [{"type": "channel_prune"}, {"type": "int8_dynamic"}]}}) == "lossy"
    assert precision_of({"compression": {"recipe": [], "options": {"tflite_quantization": "float16"}}}) == "fp16"
    assert precision_of({"compression": {"recipe": [{"type": "magnitude_prune"}]}}) == "lossy"
    assert TOLERANCES["fp32"].max_rel_error < TOLERANCES["fp16"].max_rel_error
    assert TOLERANCES["int8"].min_score > TOLERANCES["int4"].min_score


def test_layout_round_trip_for_nhwc_and_int8():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5) / 100
    entry = {"layout": "NHWC", "source_layout": "NCHW", "dtype": "float32"}
    (moved,) = to_artifact_inputs([x], [entry])
    assert moved.shape == (2, 4, 5, 3) and moved[0, 1, 2, 0] == x[0, 0, 1, 2]
    np.testing.assert_array_equal(from_artifact_outputs([moved], [entry])[0], x)
    q = {"layout": "plain", "source_layout": "plain", "dtype": "int8", "quantization": {"scale": 0.01, "zero_point": -3}}
    (qx,) = to_artifact_inputs([np.array([[0.0, 0.5, 5.0]])], [q])
    assert qx.dtype == np.int8 and qx.tolist() == [[-3, 47, 127]]
    np.testing.assert_allclose(from_artifact_outputs([qx], [q])[0], [[0.0, 0.5, 1.3]], atol=1e-6)

