import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edge.artifact import sha256_file
from edge.backends import get_backend
from edge.backends.torchscript import TorchScriptBackend
from edge.cli import main
from edge.errors import ExportError, PartialFailure, UnsupportedError
from edge.exporter import artifact_dir_name, cache_key, default_cache_dir, export, export_all
from edge.models import load_model

EXPORT_MODELS = Path(__file__).resolve().parent / "fixtures" / "export_models.py"
MANIFEST_KEYS = {"schema_version", "backend", "file", "sha256", "size_bytes", "model", "inputs", "outputs",
                 "compression", "delegation", "tool_versions", "notes", "validation", "cache_key",
                 "cache_hit", "created_at"}


def _visible(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def test_artifact_folder_manifest_and_samples(tmp_path):
    art = export("tiny-mlp", "torchscript", tmp_path, cache_dir=tmp_path / "cache")
    folder = tmp_path / "tiny-mlp-torchscript"
    assert art.dir == folder and _visible(folder) == ["manifest.json", "model.ptl", "sample_inputs.npz"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert MANIFEST_KEYS <= manifest.keys()
    assert manifest["sha256"] == sha256_file(folder / "model.ptl")
    assert manifest["size_bytes"] == (folder / "model.ptl").stat().st_size
    assert manifest["model"] == {"name": "tiny-mlp", "source": "zoo", "params": 26122, "metric": "top1"}
    assert manifest["inputs"] == [{"name": "x", "shape": [1, 64], "dtype": "float32",
                                   "layout": "plain", "source_layout": "plain"}]
    assert manifest["outputs"][0]["shape"] == [1, 10] and manifest["compression"] is None
    assert manifest["validation"]["passed"] and manifest["cache_hit"] is False
    sample = np.load(folder / "sample_inputs.npz")["arr_0"]
    np.testing.assert_array_equal(sample, load_model("tiny-mlp").example_inputs[0].numpy())
    assert _visible(tmp_path) == ["cache", "tiny-mlp-torchscript"]  # no temporary folders left


def test_reexport_is_a_cache_hit_that_converts_nothing(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = export("tiny-mlp", "torchscript", tmp_path / "a", cache_dir=cache)

    def no_conversion(*args, **kwargs):
        raise AssertionError("conversion ran on a cache hit")

    monkeypatch.setattr(TorchScriptBackend, "export", no_conversion)
    again = export("tiny-mlp", "torchscript", tmp_path / "b", cache_dir=cache)
    assert again.manifest["cache_hit"] is True and again.manifest["cache_key"] == first.manifest["cache_key"]
    assert again.sha256 == first.sha256 and sha256_file(again.path) == first.sha256
    # the cache entry itself still says it was a fresh build
    entry = json.loads((cache / first.manifest["cache_key"] / "manifest.json").read_text())
    assert entry["cache_hit"] is False
    with pytest.raises(ExportError, match="conversion ran on a cache hit"):
        export("tiny-mlp", "torchscript", tmp_path / "c", cache_dir=cache, use_cache=False)


def test_cache_dir_comes_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_CACHE_DIR", str(tmp_path / "env-cache"))
    assert default_cache_dir() == tmp_path / "env-cache"
    art = export("tiny-mlp", "torchscript", tmp_path / "out")
    assert (tmp_path / "env-cache" / art.manifest["cache_key"] / "model.ptl").exists()


def test_cache_key_covers_weights_plan_backend_and_tools():
    spec = load_model("tiny-mlp")
    tools = get_backend("torchscript").tool_versions()
    base = cache_key(spec, None, "torchscript", tools)
    assert base == cache_key(spec, None, "torchscript", tools)
    assert base != cache_key(spec, None, "executorch", tools)
    assert base != cache_key(spec, {"recipe": [{"type": "fp16"}]}, "torchscript", tools)
    assert base != cache_key(spec, None, "torchscript", {**tools, "torch": "0.0"})
    changed = load_model("tiny-mlp")
    changed = type(changed)(**{**changed.__dict__, "model": changed.fresh_model()})
    with torch.no_grad():
        changed.model.fc1.bias[0] += 1e-3
    assert base != cache_key(changed, None, "torchscript", tools)


def test_cache_key_covers_the_backends_exporter_code(monkeypatch):
    # an edit to how a backend wraps or lowers a model (not the model's own code) is a new artifact
    import edge.exporter as exporter

    spec = load_model("tiny-mlp")
    tools = get_backend("torchscript").tool_versions()
    base = cache_key(spec, None, "torchscript", tools)
    assert "class TorchScriptBackend" in exporter._backend_code("torchscript")
    monkeypatch.setattr(exporter, "_backend_code", lambda backend: "edited")
    assert base != cache_key(spec, None, "torchscript", tools)


def test_failure_midway_leaves_no_half_written_artifact(tmp_path, monkeypatch):
    real_export = TorchScriptBackend.export

    def fail_after_writing(self, model, spec, out_dir, options):
        art = real_export(self, model, spec, out_dir, options)
        assert art.path.exists()  # the model file is written, then the conversion dies
        raise ExportError("torchscript: simulated failure after writing the model file")

    monkeypatch.setattr(TorchScriptBackend, "export", fail_after_writing)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="simulated failure"):
        export("tiny-mlp", "torchscript", out, cache_dir=tmp_path / "cache")
    assert _visible(out) == []
    assert not any(p.name.endswith(".ptl") for p in (tmp_path / "cache").rglob("*"))


def test_failed_reexport_keeps_the_previous_artifact(tmp_path, monkeypatch):
    good = export("tiny-mlp", "torchscript", tmp_path, cache_dir=tmp_path / "cache")
    monkeypatch.setattr(TorchScriptBackend, "export", lambda *a, **k: (_ for _ in ()).throw(
        ExportError("torchscript: boom")))
    with pytest.raises(ExportError):
        export("tiny-mlp", "torchscript", tmp_path, use_cache=False)
    assert sha256_file(good.path) == good.sha256 and _visible(tmp_path) == ["cache", "tiny-mlp-torchscript"]


def test_export_all_goes_on_after_failures(tmp_path, artifact_cache):
    results = export_all(f"{EXPORT_MODELS}:branchy", ["executorch", "torchscript", "tflite"], tmp_path,
                         cache_dir=artifact_cache)
    assert isinstance(results["executorch"], UnsupportedError) and "executorch" in str(results["executorch"])
    assert isinstance(results["tflite"], UnsupportedError)
    assert results["torchscript"].manifest["validation"]["passed"]
    assert _visible(tmp_path) == ["export_models-torchscript"]


def test_user_image_model_exports_to_every_backend(tmp_path, artifact_cache):
    results = export_all(f"{EXPORT_MODELS}:image_model", ["torchscript", "executorch", "tflite"], tmp_path,
                         cache_dir=artifact_cache)
    for backend, art in results.items():
        assert not isinstance(art, Exception), f"{backend}: {art}"
        assert art.manifest["validation"]["passed"] and art.manifest["model"]["source"].endswith(":image_model")
    assert results["tflite"].manifest["inputs"][0]["layout"] == "NHWC"
    assert results["executorch"].manifest["inputs"][0]["layout"] == "NCHW"


def test_plan_tag_names_the_folder():
    assert artifact_dir_name("tiny-cnn", "tflite", None) == "tiny-cnn-tflite"
    assert artifact_dir_name("tiny-cnn", "tflite", {"tag": "int8 all"}) == "tiny-cnn-tflite-int8_all"
    assert len(artifact_dir_name("m", "tflite", {"recipe": []})) == len("m-tflite-") + 8


def test_cli_export_all_partial_failure_rows_and_exit_code(tmp_path, artifact_cache, capsys):
    ref = f"{EXPORT_MODELS}:branchy"
    code = main(["export", ref, "--backend", "all", "-o", str(tmp_path), "--cache-dir", str(artifact_cache)])
    text = capsys.readouterr().out
    assert code == PartialFailure.exit_code == 10
    assert "torchscript" in text and "FAILED (UnsupportedError)" in text and "data-dependent" in text
    code = main(["export", ref, "--backend", "all", "-o", str(tmp_path), "--cache-dir", str(artifact_cache),
                 "--json"])
    rows = {r["backend"]: r for r in json.loads(capsys.readouterr().out)}
    assert code == 10 and rows["torchscript"]["cache_hit"] is True and rows["executorch"]["exit_code"] == 4


def test_cli_all_failed_exits_with_the_export_error_code(tmp_path, artifact_cache, capsys):
    code = main(["export", f"{EXPORT_MODELS}:branchy_unscriptable", "--backend", "all", "-o", str(tmp_path),
                 "--cache-dir", str(artifact_cache)])
    assert code == ExportError.exit_code == 4
    assert capsys.readouterr().out.count("FAILED") == 3


def test_cli_single_backend_table(tmp_path, artifact_cache, capsys):
    code = main(["export", "tiny-cnn", "--backend", "executorch", "-o", str(tmp_path),
                 "--cache-dir", str(artifact_cache)])
    text = capsys.readouterr().out
    assert code == 0 and "tiny-cnn-executorch/model.pte" in text and "XNNPACK" in text and "top1 1.0000" in text


def test_cli_plan_file_drives_export_and_the_manifest_carries_it(tmp_path, artifact_cache, capsys):
    plan_path = tmp_path / "plan.yaml"
    assert main(["plan", "tiny-lm", "--profile", "raspberry-pi-5-8gb", "--backends", "executorch",
                 "--min-accuracy", "0.98", "-o", str(plan_path), "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["recipe"], "a Pi 5 with a 0.98 floor leaves room to compress tiny-lm"
    assert main(["export", "tiny-lm", "--backend", "executorch", "--plan", str(plan_path),
                 "-o", str(tmp_path / "out"), "--cache-dir", str(artifact_cache), "--json"]) == 0
    capsys.readouterr()
    (manifest_path,) = (tmp_path / "out").glob("*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    recipe_types = [step["type"] for step in manifest["compression"]["recipe"]]
    assert recipe_types == [step["type"] for step in planned["recipe"]]
    fp32 = export("tiny-lm", "executorch", tmp_path / "fp32", cache_dir=artifact_cache)
    assert manifest["size_bytes"] < 0.6 * fp32.size_bytes
    assert manifest["validation"]["passed"] and manifest["validation"]["score"] >= 0.95
