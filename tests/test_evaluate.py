"""Accuracy metrics: each detects the damage it is meant to detect."""
import numpy as np
import pytest

from edge import evaluate


def test_cosine_identical_and_opposite():
    a = [np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 0.0])]
    assert evaluate.cosine(a, a) == pytest.approx(1.0)
    assert evaluate.cosine(a, [-x for x in a]) == pytest.approx(-1.0)


def test_top1_counts_agreement():
    ref = [np.array([[0.1, 0.9]]), np.array([[0.8, 0.2]])]
    cand = [np.array([[0.2, 0.7]]), np.array([[0.1, 0.2]])]
    assert evaluate.top1(ref, cand) == 0.5


def test_perplexity_score_drops_when_logits_are_damaged():
    rng = np.random.default_rng(0)
    tokens = [(rng.integers(0, 8, (1, 6)),) for _ in range(4)]
    # Reference logits that favour the true next token.
    ref = []
    for (t,) in tokens:
        lg = np.zeros((1, 6, 8))
        for i in range(5):
            lg[0, i, t[0, i + 1]] = 3.0
        ref.append(lg)
    noisy = [r + rng.normal(0, 2.0, r.shape) for r in ref]
    assert evaluate.perplexity(ref, ref, tokens) == pytest.approx(1.0)
    assert evaluate.perplexity(ref, noisy, tokens) < 0.9
    d = evaluate.details("perplexity", ref, noisy, tokens)
    assert d["ppl_candidate"] > d["ppl_reference"]


def test_error_stats_max_abs():
    s = evaluate.error_stats([np.array([1.0, 2.0])], [np.array([1.5, 2.0])])
    assert s["max_abs_error"] == pytest.approx(0.5)
