import socket

import numpy as np
import pytest

from edge.backends import get_backend
from edge.backends.tflite import CALIBRATION_IMAGE_SHAPE, _sample_images
from edge.errors import UnsupportedError
from edge.exporter import export
from edge.models import load_model
from edge.validate import validate


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection in this process fails (the onnx2tf subprocess gets dead proxies)."""
    def refuse(*args, **kwargs):
        raise OSError("network access attempted during export")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("model", ["tiny-mlp", "tiny-cnn", "tiny-lm", pytest.param("minilm", marks=pytest.mark.slow)])
def test_zoo_model_exports_and_validates(model, export_dir, artifact_cache, no_network):
    art = export(model, "tflite", export_dir, cache_dir=artifact_cache)
    assert art.path.name == "model.tflite"
    val = art.manifest["validation"]
    assert val["passed"] and val["score"] > 0.999 and val["rel_error"] < 1e-4
    spec = load_model(model)
    assert [i["name"] for i in art.manifest["inputs"]] == spec.input_names
    assert "onnx2tf" in art.manifest["tool_versions"]


def test_image_input_is_nhwc_in_manifest_and_samples(export_dir, artifact_cache):
    art = export("tiny-cnn", "tflite", export_dir, cache_dir=artifact_cache)
    (entry,) = art.manifest["inputs"]
    assert entry["layout"] == "NHWC" and entry["source_layout"] == "NCHW" and entry["shape"] == [1, 32, 32, 3]
    sample = np.load(art.dir / "sample_inputs.npz")["arr_0"]
    spec = load_model("tiny-cnn")
    np.testing.assert_array_equal(sample, spec.example_inputs[0].numpy().transpose(0, 2, 3, 1))


def test_user_image_model_converts_offline(user_model, tmp_path, no_network):
    # every input is a 3-channel image: onnx2tf would download its sample images without ours.
    # Its own empty cache: the conversion must really run, whichever test exported it before.
    art = export(user_model("image_model"), "tflite", tmp_path / "out", cache_dir=tmp_path / "cache")
    assert art.manifest["cache_hit"] is False  # really converted, under the guard
    assert art.manifest["inputs"][0]["shape"] == [1, 20, 28, 3]
    assert art.manifest["validation"]["passed"]


def test_calibration_images_have_onnx2tf_shape_and_our_content():
    spec = load_model("tiny-cnn")
    images = [x[0].numpy() for x in spec.calib_inputs[:3]]
    out = _sample_images(images)
    assert out.shape == CALIBRATION_IMAGE_SHAPE and out.dtype == np.float32
    # tiled from our own images: sample 3 repeats sample 0
    np.testing.assert_array_equal(out[3], out[0])
    assert abs(float(out[0].mean()) - float(images[0].mean())) < 0.05


def test_full_integer_variant_has_int8_io_and_stays_accurate(tmp_path):
    spec = load_model("tiny-cnn")
    art = get_backend("tflite").export(spec.model, spec, tmp_path, {"tflite_quantization": "full_integer"})
    (entry,) = art.manifest["inputs"]
    assert entry["dtype"] == "int8" and entry["quantization"]["scale"] > 0
    art.manifest["compression"] = {"options": {"tflite_quantization": "full_integer"}}
    result = validate(art, spec)
    assert result["precision"] == "int8" and result["score"] >= 0.85


def test_data_dependent_control_flow_is_an_export_error(user_model, tmp_path, artifact_cache):
    with pytest.raises(UnsupportedError, match=r"tflite.*data-dependent control flow"):
        export(user_model("branchy"), "tflite", tmp_path, cache_dir=artifact_cache)
    assert list(tmp_path.iterdir()) == []


def test_tiny_llama_exports_the_decode_step_and_prefills_token_by_token(export_dir, artifact_cache):
    from lm_helpers import check_lm_artifact

    from edge.models import load_model

    spec = load_model("tiny-llama")
    art = export(spec, "tflite", export_dir, cache_dir=artifact_cache)
    check_lm_artifact(art, spec, prefill_mode="token-by-token", cache="io")
    ins = {e["name"]: e for e in art.manifest["inputs"]}
    assert ins["tokens"]["shape"] == [1, 1]
    # onnx2tf moves the 4-D cache to channels-last; the manifest records it and the runner
    # feeds the caches back in the artifact's own layout
    assert ins["k_cache"]["source_layout"] == "NCHW" and ins["k_cache"]["layout"] == "NHWC"
    assert art.manifest["generation"]["kv_cache"]["layout"] == "NHWC"


def test_a_decoder_too_big_for_this_hosts_memory_is_refused_before_converting(monkeypatch, tmp_path, artifact_cache):
    """onnx2tf's memory grows with a decoder's weights; a conversion that cannot fit is refused up front."""
    import psutil

    from edge.errors import UnsupportedError

    class Tight:
        available = 0.3e9  # 0.3 GB free

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tight())
    with pytest.raises(UnsupportedError, match=r"the embedding table alone .* needs about 0\.\d GB of memory, and 0\.3 GB may "):
        export(load_model("tiny-llama"), "tflite", tmp_path, cache_dir=artifact_cache, use_cache=False)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_the_conversion_memory_fits_what_the_benchmark_measured():
    from edge.backends.tflite import CONVERT_BASE_BYTES, conversion_bytes

    # SmolLM2-135M: a 113 MB tied table (a gather and a matmul) and 425 MB of layers pass this 24 GB host by far
    assert conversion_bytes(2 * 113.2e6, 424.7e6) > 30e9
    assert conversion_bytes(0.0, 0.0) == CONVERT_BASE_BYTES
    # what benchmarks/tflite_convert_memory.py measured: SmolLM2-shaped decoders of 1 and 3 layers
    assert conversion_bytes(2 * 113.2e6, 14.16e6) == pytest.approx(12.3e9, rel=0.05)
    assert conversion_bytes(2 * 113.2e6, 3 * 14.16e6) == pytest.approx(13.8e9, rel=0.05)
