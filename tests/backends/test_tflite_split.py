"""A language model's step converted to TFLite in parts and joined into one multi-signature .tflite."""
import numpy as np
import pytest

from edge.backends.tflite import CONVERT_BASE_BYTES, conversion_bytes
from edge.backends.tflite_split import SPLIT_ENV, Chunk, merge_tflite, plan_chunks
from edge.benchmark import bench
from edge.errors import ConfigError, UnsupportedError
from edge.exporter import export
from edge.models import load_model
from edge.models.llama import greedy

# SmolLM2-135M in fp32: the 113 MB embedding table (tied: the head's matmul holds it again), 30 layers of 14.2 MB
EMBED, HEAD, LAYERS = 113.2e6, 113.2e6, [14.16e6] * 30


def _units_in_order(chunks):
    """(embed, layers..., head) as the chunks hold them, in order."""
    out = []
    for c in chunks:
        out += (["embed"] if c.embed else []) + list(range(c.start, c.stop)) + (["head"] if c.head else [])
    return out


def test_a_step_that_fits_is_one_part():
    assert plan_chunks(EMBED, HEAD, LAYERS, 40e9, conversion_bytes) == [Chunk(0, 30, True, True)]


def test_smollm2_on_a_24_gb_host_is_split_into_parts_that_each_fit():
    budget = 16.5e9
    assert conversion_bytes(EMBED + HEAD, sum(LAYERS)) > budget  # whole, it does not
    chunks = plan_chunks(EMBED, HEAD, LAYERS, budget, conversion_bytes)
    assert len(chunks) == 3
    assert _units_in_order(chunks) == ["embed", *range(30), "head"]
    for c in chunks:
        tables = (EMBED if c.embed else 0) + (HEAD if c.head else 0)
        assert conversion_bytes(tables, sum(LAYERS[c.start:c.stop])) <= budget
    # greedy: a part ends only where the next unit would not fit
    first = chunks[0]
    assert conversion_bytes(EMBED, sum(LAYERS[:first.stop + 1])) > budget


def test_a_layer_limit_splits_even_when_memory_would_not():
    chunks = plan_chunks(1e3, 1e3, [1e3] * 5, 40e9, conversion_bytes, max_layers=2)
    assert [(c.start, c.stop) for c in chunks] == [(0, 2), (2, 4), (4, 5)]
    assert chunks[0].embed and chunks[-1].head and _units_in_order(chunks) == ["embed", 0, 1, 2, 3, 4, "head"]


def test_a_unit_too_big_alone_is_refused_with_the_arithmetic():
    with pytest.raises(UnsupportedError, match=r"the embedding table alone \(113 MB .*needs about 6\.2 GB.*3\.0 GB may be"):
        plan_chunks(EMBED, HEAD, LAYERS, 3e9, conversion_bytes)
    with pytest.raises(UnsupportedError, match="one layer alone"):
        plan_chunks(1e3, 1e3, [1e9], (CONVERT_BASE_BYTES + 1e6), conversion_bytes)


def test_a_bad_split_setting_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(SPLIT_ENV, "two")
    with pytest.raises(ConfigError, match=f"expected {SPLIT_ENV} to be a whole number"):
        export(load_model("tiny-llama"), "tflite", tmp_path, use_cache=False, validate=False)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def split_artifact(tmp_path_factory):
    spec = load_model("tiny-llama")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SPLIT_ENV, "1")
        art = export(spec, "tflite", tmp_path_factory.mktemp("split"), use_cache=False)
    return spec, art


def test_the_parts_join_into_one_file_that_generates_like_eager(split_artifact):
    from ai_edge_litert.interpreter import Interpreter

    spec, art = split_artifact
    parts = art.manifest["generation"]["chunks"]
    layers = spec.generation.config.layers
    assert [p["layers"] for p in parts] == [[i, i + 1] for i in range(layers)]
    assert parts[0]["embed"] and parts[-1]["head"] and not parts[0]["head"]
    assert sorted(Interpreter(model_path=str(art.path)).get_signature_list()) == [p["signature"] for p in parts]
    assert [f.name for f in art.dir.iterdir() if f.suffix == ".tflite"] == ["model.tflite"]
    k = next(e for e in art.manifest["inputs"] if e["name"] == "k_cache")
    assert k["shape"][0] == layers and parts[0]["cache_shape"][0] == 1
    v = art.manifest["validation"]
    assert v["passed"] and v["token_agreement"] == 1.0 and v["min_step_cosine"] > 0.9999
    assert any("converted in" in n and f"{SPLIT_ENV}=1" in n for n in art.manifest["notes"])


def test_the_runner_generates_with_the_parts_on_the_local_target(split_artifact):
    spec, art = split_artifact
    res = bench(art.path, "local", warmup=0, threads=1, prompt_tokens=12, new_tokens=10)
    assert res.generation["tokens"] == greedy(spec.model, spec.generation.prompt[:, :12], 10)[0]
    assert res.generation["prefill_mode"] == "token-by-token" and len(res.latencies_ms) == 9


def test_the_parts_generate_over_ssh_on_the_lab_device(devicelab, split_artifact):
    _, art = split_artifact
    res = bench(art.path, devicelab.names[0], targets_file=devicelab.targets_file, warmup=0, threads=1, new_tokens=8)
    assert res.generation["tokens"] == art.manifest["generation"]["reference"]["host_tokens"][:8]


def test_merge_stores_a_repeated_buffer_once_and_keeps_each_signature(tmp_path):
    """The same part joined twice: two signatures, the weights once, the same outputs from each."""
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from edge.backends import get_backend
    from edge.backends.base import StepSpec
    from edge.models.llama import ChunkModule

    model = load_model("tiny-llama").model.eval()
    part = ChunkModule(model, 0, 0, False, True).eval()  # norm + head: one big matrix
    example = part.example_inputs()
    art = get_backend("tflite")._convert(part, StepSpec("head", example, part.input_names, part.output_names,
                                                        [example]), tmp_path, None)
    entries = [{"signature": key, "inputs": [{"name": "hidden"}], "outputs": ["logits"]} for key in ("a", "b")]
    out = tmp_path / "joined.tflite"
    merge_tflite([art.path, art.path], entries, out)
    head_bytes = model.lm_head.weight.numel() * 4
    assert out.stat().st_size < art.path.stat().st_size + head_bytes / 2
    interp = Interpreter(model_path=str(out))
    hidden = torch.randn(1, model.cfg.dim).numpy()
    a, b = (interp.get_signature_runner(k)(hidden=hidden)["logits"] for k in ("a", "b"))
    expected = part(torch.from_numpy(hidden))[0].detach().numpy()
    np.testing.assert_allclose(a, expected, atol=1e-4)
    np.testing.assert_array_equal(a, b)
    assert not list(tmp_path.glob("*.partial"))


def test_the_backends_host_run_chains_the_parts_like_the_eager_step(split_artifact):
    """validate.run_artifact's path: the whole step (caches in and out) through the parts."""
    import torch

    from edge.models.llama import StepModule
    from edge.validate import run_artifact

    spec, art = split_artifact
    step = StepModule(spec.model.eval()).eval()
    tokens, pos, k, v = step.example_inputs(1)
    k, v = torch.randn_like(k), torch.randn_like(v)
    pos = torch.tensor([5])
    with torch.no_grad():
        expected = [t.numpy() for t in step(torch.tensor([[65]]), pos, k, v)]
    got = run_artifact(art, [(torch.tensor([[65]]), pos, k, v)])[0]
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, atol=1e-4)
