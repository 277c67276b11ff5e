"""Unstructured magnitude pruning: zeros at the requested rate, shapes (and so size) unchanged."""
from __future__ import annotations

import pytest

from edge.compress import CompressContext, MagnitudePruneConfig, apply
from edge.compress.prune import sparsity_of
from edge.errors import ConfigError

from compress_helpers import eval_score, n_params, state_bytes


def test_magnitude_prune_reaches_sparsity_without_changing_shapes(tiny_mlp):
    before = tiny_mlp.fresh_model()
    model = apply(tiny_mlp.fresh_model(), MagnitudePruneConfig(sparsity=0.5), CompressContext("eager"))
    assert sparsity_of(before) == 0.0
    assert sparsity_of(model) == pytest.approx(0.5, abs=0.01)
    assert n_params(model) == n_params(before)
    # dense storage: zeros take as many bytes as any other value
    assert state_bytes(model) == state_bytes(before)
    assert eval_score(tiny_mlp, model) < 1.0 or sparsity_of(model) > 0.49


def test_magnitude_prune_removes_smallest_weights_first(tiny_lm):
    low = apply(tiny_lm.fresh_model(), MagnitudePruneConfig(sparsity=0.1), CompressContext("eager"))
    high = apply(tiny_lm.fresh_model(), MagnitudePruneConfig(sparsity=0.6), CompressContext("eager"))
    assert eval_score(tiny_lm, low) > 0.99 > eval_score(tiny_lm, high)


def test_magnitude_prune_group_filter(tiny_lm):
    model = apply(tiny_lm.fresh_model(), MagnitudePruneConfig(sparsity=0.5, groups=("ffn",)),
                  CompressContext("eager"))
    assert (model.layers[0].ffn.up_proj.weight == 0).float().mean() == pytest.approx(0.5, abs=0.01)
    assert (model.layers[0].attn.q_proj.weight == 0).sum() == 0


def test_sparsity_must_be_a_fraction():
    with pytest.raises(ConfigError, match="sparsity"):
        MagnitudePruneConfig(sparsity=1.5)
