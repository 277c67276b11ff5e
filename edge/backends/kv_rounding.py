"""Keys and values as a KV cache of a given element type returns them, on the host.

:func:`round_kv` wraps each attention layer's ``project`` (q, k, v after RoPE) of an edge
:class:`~edge.models.llama.Llama` so the eager model computes with rounded keys and values;
the backends say which rounding (``lowering.py``: plain fp16 or q8_0; ``ggml.py``: llama.cpp's).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import UnsupportedError

Q8_0_BLOCK = 32  # values per GGML q8_0 block (with one fp16 scale: 34 bytes)


def attention_layers(model: nn.Module) -> list[nn.Module]:
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        return []
    return [b.attn for b in layers if hasattr(getattr(b, "attn", None), "project")]


class _RoundedProjection:
    """``Attention.project`` with its outputs rounded: q (B, T, H, D), k and v (B, T, Hkv, D)."""

    def __init__(self, project: Callable, round_q: Callable, round_k: Callable, round_v: Callable):
        self.project, self.round_q, self.round_k, self.round_v = project, round_q, round_k, round_v

    def __call__(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        q, k, v = self.project(x, cos, sin)
        return self.round_q(q), self.round_k(k), self.round_v(v)


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def round_kv(model: nn.Module, round_k: Callable, round_v: Callable,
             round_q: Callable | None = None) -> nn.Module:
    """Make every attention layer compute with keys and values as a cache returns them.

    The full-sequence ``forward`` (perplexity, sensitivity) and the cached ``step`` both go
    through ``Attention.project``, so both see the rounded values; ``round_q`` is for runtimes
    whose attention kernel also converts the query to the cache's dot-product type.
    """
    for attn in attention_layers(model):
        attn.project = _RoundedProjection(attn.project, round_q or _same, round_k, round_v)
    return model


def round_fp16(x: torch.Tensor) -> torch.Tensor:
    return x.half().to(x.dtype)


def round_q8_0(x: torch.Tensor) -> torch.Tensor:
    """``x`` through GGML's q8_0 blocks along the last dim (a multiple of 32), as ggml's CPU
    kernels quantize at run time: scale d = max|x| / 127 kept as fp16, values x * 127 / max|x|
    rounded to the nearest integer (ties to even, as AVX2 and NEON round), read back as q x d."""
    shape = x.shape
    if shape[-1] % Q8_0_BLOCK:
        raise UnsupportedError(f"q8_0 holds blocks of {Q8_0_BLOCK} values; a row of {shape[-1]} cannot be cached")
    blocks = x.detach().float().reshape(-1, Q8_0_BLOCK)
    amax = blocks.abs().amax(dim=1, keepdim=True)
    inv = torch.where(amax > 0, 127.0 / amax, torch.zeros_like(amax))
    q = torch.round(blocks * inv)
    return (q * (amax / 127.0).half().float()).reshape(shape).to(x.dtype)


def round_plain(model: nn.Module, dtype: str) -> nn.Module:
    """The host's plain rounding: keys and values in ``dtype`` (q8_0 blocks along the head dim)."""
    if dtype == "fp32":
        return model
    rounding = round_fp16 if dtype == "fp16" else round_q8_0
    return round_kv(model, rounding, rounding)
