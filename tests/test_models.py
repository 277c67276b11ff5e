"""The model zoo and the user-model loaders."""
from pathlib import Path

import pytest
import torch

from edge.errors import ModelLoadError
from edge.models import ZOO, list_models, load_model
from edge.models.minilm import package_model_dir

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_runs_and_has_disjoint_data(name):
    spec = load_model(name)
    assert spec.name == name
    with torch.no_grad():
        out = spec.model(*spec.example_inputs)
    assert out.shape[0] == 1 and torch.isfinite(out).all()
    assert len(spec.eval_inputs) >= 16 and len(spec.calib_inputs) >= 16
    calib = {tuple(t.flatten().tolist()[:64]) for t in (x[0] for x in spec.calib_inputs)}
    evals = {tuple(t.flatten().tolist()[:64]) for t in (x[0] for x in spec.eval_inputs)}
    assert not calib & evals, "calibration and evaluation inputs must not overlap"
    assert len(spec.input_names) == len(spec.example_inputs)
    assert spec.metric in {"cosine", "top1", "perplexity"}


@pytest.mark.parametrize("name", ["tiny-mlp", "tiny-cnn", "tiny-lm"])
def test_zoo_models_are_deterministic(name):
    spec = load_model(name)
    a, b = spec.fresh_model(), spec.fresh_model()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_fresh_model_is_independent_copy():
    spec = load_model("tiny-mlp")
    m = spec.fresh_model()
    with torch.no_grad():
        m.fc1.weight.zero_()
    assert spec.model.fc1.weight.abs().sum() > 0


@torch.no_grad()
def test_minilm_is_the_real_pretrained_embedder():
    spec = load_model("minilm")
    assert 22_000_000 < spec.num_params() < 23_500_000
    with torch.no_grad():
        embs = [spec.model(*x)[0] for x in spec.eval_inputs[:3]]
    for e in embs:
        assert e.shape == (384,) and abs(float(e.norm()) - 1.0) < 1e-4
    # Related sentences are closer than unrelated ones: a random model would not do this.
    same = spec.model(*_tok(spec, "A dog runs in the park."))[0] @ spec.model(*_tok(spec, "A puppy is running through a park."))[0]
    diff = spec.model(*_tok(spec, "A dog runs in the park."))[0] @ spec.model(*_tok(spec, "The quarterly tax report is due."))[0]
    assert float(same) > float(diff) + 0.2


def _tok(spec, sentence):
    from edge.models.minilm import SEQ_LEN, tokenize

    return tokenize(package_model_dir(), [sentence], SEQ_LEN)[0]


def test_tiny_lm_eval_text_is_likely_under_the_model():
    from edge.evaluate import perplexity_of

    spec = load_model("tiny-lm")
    with torch.no_grad():
        logits = [spec.model(*x).numpy() for x in spec.eval_inputs]
    ppl = perplexity_of(logits, spec.eval_inputs)
    assert ppl < 256 / 2, "model-sampled text must be far more likely than uniform"


def test_list_models_names_the_zoo():
    assert {m["name"] for m in list_models()} == set(ZOO)


def test_user_factory_with_image_input():
    spec = load_model(f"{FIXTURES}/user_models.py:image_model")
    assert spec.example_inputs[0].shape == (1, 3, 24, 24)
    assert spec.metric == "top1"
    assert spec.eval_inputs[0][0].shape == (1, 3, 24, 24)


def test_user_factory_bare_tensor_example():
    spec = load_model(f"{FIXTURES}/user_models.py:linear_model")
    assert spec.example_inputs[0].shape == (1, 16)


def test_hf_directory_loads_as_embedder():
    spec = load_model(str(package_model_dir()))
    assert spec.metric == "cosine" and spec.input_names == ["input_ids", "attention_mask"]


@pytest.mark.parametrize(
    "ref, fragment",
    [
        ("no-such-model", "expected a zoo name"),
        ("/nonexistent/file.py:f", "expected a Python file"),
        (f"{FIXTURES}/user_models.py:missing", "expected a callable 'missing'"),
        (f"{FIXTURES}/user_models.py:NOT_CALLABLE", "expected a callable 'NOT_CALLABLE'"),
        (f"{FIXTURES}/user_models.py:returns_wrong_thing", "expected the factory to return"),
        (f"{FIXTURES}/user_models.py:returns_non_module", "torch.nn.Module"),
        (f"{FIXTURES}/user_models.py:inconsistent_inputs", "failed on its own example inputs"),
        (f"{FIXTURES}/user_models.py:raises", "factory exploded"),
    ],
)
def test_bad_model_refs_get_clear_errors(ref, fragment):
    with pytest.raises(ModelLoadError) as err:
        load_model(ref)
    assert fragment in str(err.value)


def test_directory_without_config_is_an_error(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(str(tmp_path))


def test_factory_file_that_fails_to_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import does_not_exist_anywhere\n")
    with pytest.raises(ModelLoadError, match="importing .* failed"):
        load_model(f"{bad}:factory")


@torch.no_grad()
def test_tiny_cnn_classes_are_spread_so_top1_agreement_means_something():
    spec = load_model("tiny-cnn")
    preds = spec.model(torch.cat([x for (x,) in spec.eval_inputs])).argmax(1)
    counts = torch.bincount(preds, minlength=10)
    assert (counts > 0).sum() >= 6 and counts.max() <= len(preds) // 3


def test_tiny_lm_shipped_text_is_what_sampling_the_model_gives():
    """tiny-lm loads its sampled text from a file (sampling at load time cost seconds); it must not go stale."""
    from edge.models.tiny_lm import _shipped_text, build_tiny_lm, sampled_text

    fresh = sampled_text(build_tiny_lm())
    shipped = _shipped_text()
    assert torch.equal(fresh["calib"], shipped["calib"]) and torch.equal(fresh["eval"], shipped["eval"])
    from edge.models import tiny_lm

    def no_sampling(*args, **kwargs):
        raise AssertionError("tiny_lm() sampled text at load time")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tiny_lm, "sample_sequences", no_sampling)
        spec = tiny_lm.tiny_lm()
    assert torch.equal(torch.cat([x[0] for x in spec.eval_inputs]), shipped["eval"])
