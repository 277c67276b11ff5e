"""Quantization techniques: real size and accuracy effects per backend flavour."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from edge.compress import (CompressContext, EmbeddingQuantConfig, Fp16Config, Int4WeightConfig,
                           Int8DynamicConfig, Int8StaticConfig, apply)
from edge.errors import UnsupportedError

from compress_helpers import eval_score, state_bytes


@pytest.fixture(scope="module")
def fp32_bytes(tiny_lm):
    return state_bytes(tiny_lm.fresh_model())


@pytest.fixture(scope="module")
def int8_lm(tiny_lm):
    return apply(tiny_lm.fresh_model(), Int8DynamicConfig(), CompressContext("executorch", tiny_lm))


def test_int8_dynamic_torchao_shrinks_linears_and_keeps_perplexity(tiny_lm, int8_lm, fp32_bytes):
    assert eval_score(tiny_lm, int8_lm) > 0.99
    # embedding + RMSNorm stay fp32: 2 of ~15 parts of the weights; the Linears drop to 1/4
    assert state_bytes(int8_lm) < 0.45 * fp32_bytes
    assert isinstance(int8_lm.embed_tokens.weight, nn.Parameter)  # embeddings untouched
    assert type(int8_lm.lm_head.weight).__name__ != "Parameter"


def test_int8_dynamic_only_touches_selected_groups(tiny_lm):
    model = apply(tiny_lm.fresh_model(), Int8DynamicConfig(groups=("ffn",)),
                  CompressContext("executorch", tiny_lm))
    assert type(model.layers[0].ffn.up_proj.weight).__name__ != "Parameter"
    assert type(model.layers[0].attn.q_proj.weight) is nn.Parameter


def test_int8_dynamic_torchscript_uses_torch_ao_per_channel(tiny_lm):
    model = apply(tiny_lm.fresh_model(), Int8DynamicConfig(), CompressContext("torchscript", tiny_lm))
    q = model.layers[0].attn.q_proj
    assert type(q).__name__ == "Linear" and "dynamic" in type(q).__module__
    assert q.weight().qscheme() == torch.per_channel_affine
    assert eval_score(tiny_lm, model) > 0.98


def test_tflite_sets_export_options_and_leaves_model(tiny_lm):
    model = tiny_lm.fresh_model()
    ctx = CompressContext("tflite", tiny_lm)
    assert apply(model, Int8DynamicConfig(), ctx) is model
    assert ctx.options == {"tflite_quantization": "dynamic_range"}
    with pytest.raises(UnsupportedError, match="whole model once"):
        apply(model, Fp16Config(), ctx)
    ctx2 = CompressContext("tflite", tiny_lm)
    apply(model, Int8StaticConfig(), ctx2)
    assert ctx2.options == {"tflite_quantization": "integer"}


def test_int4_group_wise_is_smaller_than_int8_and_costs_some_accuracy(tiny_lm, int8_lm, fp32_bytes):
    model = apply(tiny_lm.fresh_model(), Int4WeightConfig(group_size=32),
                  CompressContext("executorch", tiny_lm))
    int8_score, int4_score = eval_score(tiny_lm, int8_lm), eval_score(tiny_lm, model)
    assert 0.9 < int4_score < int8_score
    with pytest.raises(UnsupportedError, match="int4"):
        apply(tiny_lm.fresh_model(), Int4WeightConfig(), CompressContext("torchscript", tiny_lm))


def test_int4_skips_layers_whose_width_the_group_does_not_divide(tiny_lm):
    model = apply(tiny_lm.fresh_model(), Int4WeightConfig(group_size=64),
                  CompressContext("executorch", tiny_lm))
    assert type(model.layers[0].attn.q_proj.weight) is nn.Parameter  # 96 inputs: not divisible by 64
    assert type(model.layers[0].ffn.down_proj.weight).__name__ != "Parameter"  # 256 inputs


def test_fp16_halves_weights_and_keeps_fp32_interface(tiny_lm, fp32_bytes):
    model = apply(tiny_lm.fresh_model(), Fp16Config(), CompressContext("torchscript", tiny_lm))
    assert state_bytes(model) < 0.55 * fp32_bytes
    out = model(*tiny_lm.eval_inputs[0])
    assert out.dtype == torch.float32
    assert eval_score(tiny_lm, model) > 0.999


@pytest.mark.parametrize("bits,limit", [(8, 0.999), (4, 0.95)])
def test_embedding_quantization(tiny_lm, bits, limit):
    ctx = CompressContext("executorch", tiny_lm)
    model = apply(tiny_lm.fresh_model(), EmbeddingQuantConfig(bits=bits), ctx)
    assert type(model.embed_tokens.weight).__name__ != "Parameter"
    assert model.embed_tokens.padding_idx is None
    assert ctx.options["executorch_quant_fusion"] is True
    assert eval_score(tiny_lm, model) > limit


def test_embedding_int8_torchscript(tiny_lm):
    model = apply(tiny_lm.fresh_model(), EmbeddingQuantConfig(bits=8), CompressContext("torchscript", tiny_lm))
    assert "Embedding" in type(model.embed_tokens).__name__ and "quantized" in type(model.embed_tokens).__module__
    assert eval_score(tiny_lm, model) > 0.999


def test_int8_static_pt2e_on_cnn_keeps_outputs(tiny_cnn):
    model = apply(tiny_cnn.fresh_model(), Int8StaticConfig(calib_samples=16),
                  CompressContext("executorch", tiny_cnn))
    names = {n.target.__name__ if callable(n.target) else str(n.target) for n in model.graph.nodes}
    assert any("quantize_per_tensor" in n for n in names)
    x = tiny_cnn.eval_inputs[0][0]
    ref, out = tiny_cnn.model(x), model(x)
    assert torch.nn.functional.cosine_similarity(ref, out).item() > 0.99
    assert eval_score(tiny_cnn, model, n=16, batched=False) >= 0.98
