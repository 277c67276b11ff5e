import numpy as np
import pytest
import torch

from edge.artifact import load_artifact
from edge.errors import UnsupportedError
from edge.exporter import export


@pytest.mark.parametrize("model", ["tiny-mlp", "tiny-cnn", "tiny-lm", "minilm"])
def test_zoo_model_exports_and_validates(model, export_dir, artifact_cache):
    art = export(model, "torchscript", export_dir, cache_dir=artifact_cache)
    assert art.path.name == "model.ptl" and art.path.parent.name == f"{model}-torchscript"
    val = art.manifest["validation"]
    assert val["passed"] and val["precision"] == "fp32"
    assert val["score"] > 0.999 and val["rel_error"] < 1e-4
    notes = " ".join(art.manifest["notes"])
    # optimize_for_mobile either ran or the manifest says why not (x86 wheels lack XNNPACK)
    assert "captured with torch.jit.trace" in notes
    assert "optimize_for_mobile unavailable" in notes or "XNNPACK" not in notes


def test_ptl_runs_in_the_lite_interpreter(export_dir, artifact_cache):
    art = export("tiny-cnn", "torchscript", export_dir, cache_dir=artifact_cache)
    from torch.jit.mobile import _load_for_lite_interpreter

    module = _load_for_lite_interpreter(str(load_artifact(art.dir).path))
    sample = np.load(art.dir / "sample_inputs.npz")["arr_0"]
    assert sample.shape == (1, 3, 32, 32)
    assert module(torch.from_numpy(sample)).shape == (1, 10)


def test_data_dependent_branch_is_scripted_not_frozen(user_model, tmp_path, artifact_cache):
    art = export(user_model("branchy"), "torchscript", tmp_path, cache_dir=artifact_cache)
    assert "captured with torch.jit.script" in art.manifest["notes"]
    # eval inputs take both branches; a frozen trace would fail validation
    assert art.manifest["validation"]["max_abs_error"] == 0.0


def test_untraceable_and_unscriptable_model_names_backend_and_construct(user_model, tmp_path, artifact_cache):
    with pytest.raises(UnsupportedError, match=r"torchscript.*data-dependent control flow.*export_models.py"):
        export(user_model("branchy_unscriptable"), "torchscript", tmp_path, cache_dir=artifact_cache)
    assert list(tmp_path.iterdir()) == []


def test_tiny_llama_exports_a_cached_step_that_generates_like_eager(export_dir, artifact_cache):
    from lm_helpers import check_lm_artifact

    from edge.models import load_model

    spec = load_model("tiny-llama")
    art = export(spec, "torchscript", export_dir, cache_dir=artifact_cache)
    check_lm_artifact(art, spec, prefill_mode="batched", cache="io")
    names = [e["name"] for e in art.manifest["inputs"]]
    assert names == ["tokens", "input_pos", "k_cache", "v_cache"]
