"""Structured pruning really removes weights: parameters, stored bytes and exported size fall."""
from __future__ import annotations

import pytest

from edge.compress import (ChannelPruneConfig, CompressContext, FfnPruneConfig, HeadPruneConfig,
                           apply)
from edge.errors import UnsupportedError
from edge.models import load_model

from compress_helpers import eval_score, n_params


@pytest.fixture(scope="module")
def minilm():
    return load_model("minilm")


def test_head_prune_tiny_lm(tiny_lm):
    model = apply(tiny_lm.fresh_model(), HeadPruneConfig(fraction=0.25), CompressContext("eager"))
    attn = model.layers[0].attn
    assert attn.heads == 3 and attn.q_proj.out_features == 72 and attn.o_proj.in_features == 72
    assert n_params(model) < n_params(tiny_lm.model) - 3 * 4 * 96 * 24 + 1
    assert 0.8 < eval_score(tiny_lm, model) < 1.0
    out = model(*tiny_lm.example_inputs)
    assert out.shape == (1, 32, 256)


def test_ffn_prune_tiny_lm_swiglu(tiny_lm):
    model = apply(tiny_lm.fresh_model(), FfnPruneConfig(fraction=0.5), CompressContext("eager"))
    ffn = model.layers[1].ffn
    assert ffn.gate_proj.out_features == ffn.up_proj.out_features == ffn.down_proj.in_features == 128
    assert n_params(model) == n_params(tiny_lm.model) - 3 * 3 * 96 * 128
    assert eval_score(tiny_lm, model) > 0.8


def test_head_and_ffn_prune_minilm_bert(minilm):
    model = apply(minilm.fresh_model(), HeadPruneConfig(fraction=0.25), CompressContext("eager"))
    model = apply(model, FfnPruneConfig(fraction=0.25), CompressContext("eager"))
    layer = model.encoder.encoder.layer[0]
    assert layer.attention.self.num_attention_heads == 9
    assert layer.attention.self.query.out_features == 9 * 32
    assert layer.intermediate.dense.out_features == 1152
    assert n_params(model) < n_params(minilm.model) - 6 * (4 * 384 * 96 + 2 * 384 * 384)
    assert eval_score(minilm, model, n=8) > 0.7


def test_channel_prune_tiny_cnn_shrinks_params_and_exported_size(tiny_cnn, tmp_path):
    from edge.backends import get_backend

    model = apply(tiny_cnn.fresh_model(), ChannelPruneConfig(fraction=0.5), CompressContext("eager"))
    assert [b.pw.out_channels for b in model.blocks] == [16, 32, 32, 64]
    assert model.blocks[1].dw.in_channels == model.blocks[1].dw.groups == 16
    assert model.head.in_features == 64
    assert n_params(model) < 0.5 * n_params(tiny_cnn.model)
    assert model(*tiny_cnn.example_inputs).shape == (1, 10)
    be = get_backend("torchscript")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    dense = be.export(tiny_cnn.fresh_model(), tiny_cnn, tmp_path / "a", {})
    pruned = be.export(model, tiny_cnn, tmp_path / "b", {})
    assert pruned.path.stat().st_size < 0.8 * dense.path.stat().st_size


def test_structured_prune_names_what_it_expected(tiny_mlp):
    with pytest.raises(UnsupportedError, match="expected depthwise-separable"):
        apply(tiny_mlp.fresh_model(), ChannelPruneConfig(), CompressContext("eager"))
    with pytest.raises(UnsupportedError, match="attention"):
        apply(tiny_mlp.fresh_model(), HeadPruneConfig(), CompressContext("eager"))
