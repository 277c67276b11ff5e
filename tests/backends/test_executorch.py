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


def test_tiny_llama_keeps_its_kv_cache_inside_the_program(export_dir, artifact_cache):
    from lm_helpers import check_lm_artifact

    from edge.models import load_model

    spec = load_model("tiny-llama")
    art = export(spec, "executorch", export_dir, cache_dir=artifact_cache)
    check_lm_artifact(art, spec, prefill_mode="batched", cache="internal")
    assert [e["name"] for e in art.manifest["inputs"]] == ["tokens", "input_pos"]
    assert art.manifest["inputs"][0]["dynamic"] == {"dim": 1, "min": 1, "max": 32}
    # ExecuTorch's LLM runner reads these constant methods; custom SDPA ops are in the program
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(str(art.path))
    assert {"forward", "get_max_seq_len", "get_max_context_len", "use_kv_cache", "get_vocab_size"} <= set(
        program.method_names)
    assert program.load_method("get_max_context_len").execute([])[0] == 128
    assert "llama::custom_sdpa" in " ".join(art.manifest["notes"]) or art.manifest["delegation"]
    # RMSNorm's mean runs inside XNNPACK (a product with a row of ones), not as a portable op between calls
    dele = art.manifest["delegation"]["by_operator"]
    assert "aten_mean_dim" not in dele
    assert dele["aten_linear_default"]["portable"] == 0


def test_tiny_llama_pte_runs_in_executorch_own_llm_runner(export_dir, artifact_cache, tmp_path):
    """The .pte is what ExecuTorch's C++ TextLLMRunner expects: same text as eager greedy decoding."""
    from edge.models import load_model
    from edge.models.lm import write_byte_tokenizer
    from edge.models.llama import greedy

    spec = load_model("tiny-llama")
    art = export(spec, "executorch", export_dir, cache_dir=artifact_cache)
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner

    runner = TextLLMRunner(str(art.path), str(write_byte_tokenizer(tmp_path / "tokenizer.json")))
    pieces, stats = [], []
    prompt = bytes(spec.generation.prompt[0].tolist()).decode()
    config = GenerationConfig(max_new_tokens=20, temperature=0.0, echo=False, num_bos=0, num_eos=0)
    runner.generate(prompt, config, pieces.append, stats.append)
    eager, _ = greedy(spec.model, spec.generation.prompt, 20)
    assert "".join(pieces) == bytes(eager).decode()
    assert stats and stats[0].num_prompt_tokens == 32
