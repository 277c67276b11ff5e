import numpy as np
import pytest

from edge.errors import UnsupportedError
from edge.exporter import export


@pytest.mark.parametrize("model", ["tiny-mlp", "tiny-cnn", "tiny-lm", pytest.param("minilm", marks=pytest.mark.slow)])
def test_zoo_model_exports_and_validates(model, export_dir, artifact_cache):
    art = export(model, "executorch", export_dir, cache_dir=artifact_cache)
    assert art.path.name == "model.pte"
    val = art.manifest["validation"]
    assert val["passed"] and val["score"] > 0.999 and val["rel_error"] < 1e-4
    dele = art.manifest["delegation"]
    assert dele["delegate"] == "XnnpackBackend" and dele["delegated_subgraphs"] >= 1
    assert dele["delegated_nodes"] + dele["portable_nodes"] == sum(
        v["delegated"] + v["portable"] for v in dele["by_operator"].values())
    assert 0.5 < dele["coverage"] <= 1.0


def test_delegation_names_ops_per_kernel_library(export_dir, artifact_cache):
    cnn = export("tiny-cnn", "executorch", export_dir, cache_dir=artifact_cache).manifest["delegation"]
    assert cnn["by_operator"]["aten_convolution_default"] == {"delegated": 9, "portable": 0}
    lm = export("tiny-lm", "executorch", export_dir, cache_dir=artifact_cache).manifest["delegation"]
    # XNNPACK has no embedding lookup: it stays on a portable kernel
    assert lm["by_operator"]["aten_embedding_default"]["portable"] == 1
    assert "aten_embedding_default" in lm["portable_ops"]


def test_pte_runs_in_the_executorch_runtime(export_dir, artifact_cache):
    import torch
    from executorch.runtime import Runtime

    art = export("tiny-mlp", "executorch", export_dir, cache_dir=artifact_cache)
    method = Runtime.get().load_program(str(art.path)).load_method("forward")
    sample = np.load(art.dir / "sample_inputs.npz")["arr_0"]
    assert method.execute([torch.from_numpy(sample)])[0].shape == (1, 10)


def test_data_dependent_control_flow_is_an_export_error(user_model, tmp_path, artifact_cache):
    with pytest.raises(UnsupportedError, match=r"executorch.*data-dependent control flow"):
        export(user_model("branchy"), "executorch", tmp_path, cache_dir=artifact_cache)
    assert list(tmp_path.iterdir()) == []


def test_op_without_lowering_names_the_op(user_model, tmp_path, artifact_cache):
    with pytest.raises(UnsupportedError, match=r"executorch: operator aten\.cumprod"):
        export(user_model("cumprod"), "executorch", tmp_path, cache_dir=artifact_cache)
