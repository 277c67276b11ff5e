"""The KV cache's element type: the config, and what the host's eager model computes with it."""
from __future__ import annotations

import pytest
import torch

from edge.backends import get_backend
from edge.backends.kv_rounding import round_q8_0
from edge.compress import CompressContext, KvCacheConfig, apply, config_from_dict
from edge.compress.kv_cache import KV_BYTES_PER_ELEMENT
from edge.errors import ConfigError, UnsupportedError

from compress_helpers import eval_score


@pytest.fixture(scope="module")
def tiny_llama():
    from edge.models import load_model

    return load_model("tiny-llama")


def test_the_config_names_a_cache_type_and_round_trips():
    assert config_from_dict(KvCacheConfig("q8_0").to_dict()) == KvCacheConfig("q8_0")
    assert KvCacheConfig("fp16").label() == "kv cache fp16"
    with pytest.raises(ConfigError, match=r"kv_cache: expected dtype in \['fp32', 'fp16', 'q8_0'\], found 'int4'"):
        KvCacheConfig("int4")
    assert KV_BYTES_PER_ELEMENT == {"fp32": 4.0, "fp16": 2.0, "q8_0": 34 / 32}


def test_q8_0_rounds_blocks_of_32_to_127_steps_of_their_largest_value():
    x = torch.cat([torch.linspace(-1.0, 1.0, 32), torch.linspace(0.0, 100.0, 32)]).reshape(1, 64)
    y = round_q8_0(x).reshape(2, 32)
    amax = torch.tensor([[1.0], [100.0]])
    q = y / (amax / 127).half().float()  # each block: integers times its fp16 scale
    assert torch.allclose(q, q.round(), atol=1e-3) and q.abs().max().round() == 127
    assert ((x.reshape(2, 32) * 127 / amax - q).abs() <= 0.5 + 1e-3).all()  # the nearest step
    assert (y.flatten() != x.flatten()).any()
    with pytest.raises(UnsupportedError, match="blocks of 32 values; a row of 24"):
        round_q8_0(torch.ones(2, 24))


def test_the_eager_flavour_rounds_keys_and_values_and_fp32_is_exact(tiny_llama):
    exact = apply(tiny_llama.fresh_model(), KvCacheConfig("fp32"), CompressContext("eager", tiny_llama))
    half = apply(tiny_llama.fresh_model(), KvCacheConfig("fp16"), CompressContext("eager", tiny_llama))
    tokens = tiny_llama.generation.prompt
    with torch.no_grad():
        ref, same, rounded = tiny_llama.model(tokens), exact(tokens), half(tokens)
    assert torch.equal(ref, same)
    assert 0 < (rounded - ref).abs().max() < 0.05  # fp16 keys and values: close, not identical
    assert eval_score(tiny_llama, half) > 0.999
    # tiny-llama's heads are 24 wide: q8_0's 32-value blocks do not fit them
    q8 = apply(tiny_llama.fresh_model(), KvCacheConfig("q8_0"), CompressContext("eager", tiny_llama))
    with pytest.raises(UnsupportedError, match="a row of 24"):
        q8(tokens)


def test_a_kv_cache_belongs_to_a_language_model(tiny_mlp):
    with pytest.raises(UnsupportedError, match="a KV cache belongs to a language model"):
        apply(tiny_mlp.fresh_model(), KvCacheConfig("fp16"), CompressContext("eager", tiny_mlp))


def test_backends_say_which_cache_types_their_artifacts_hold():
    for name in ("executorch", "torchscript", "tflite"):
        assert get_backend(name).unsupported_reason(KvCacheConfig("fp32")) is None
        assert "hold the KV cache as fp32 only" in get_backend(name).unsupported_reason(KvCacheConfig("q8_0"))
    assert all(get_backend("llamacpp").unsupported_reason(KvCacheConfig(d)) is None for d in ("fp16", "q8_0", "fp32"))
