"""Structured pruning: remove whole attention heads, FFN neurons or conv channels.

Unlike magnitude pruning this shrinks the weight tensors, so parameter count, artifact
size and latency all fall. Units are ranked by weight norm (no data needed) and the
lowest-ranked ``fraction`` is removed from every layer; at least one unit always stays.

Supported structures (others raise UnsupportedError naming what was expected):
- heads: Llama-style attention (``q_proj/k_proj/v_proj/o_proj``, ``heads``, ``head_dim``) and
  Hugging Face BERT attention (``self.query/key/value`` + ``output.dense``).
- FFN: SwiGLU (``gate_proj/up_proj/down_proj``) and BERT (``intermediate.dense`` + ``output.dense``).
- channels: depthwise-separable blocks (``dw, bn1, pw, bn2``) in ``model.blocks`` followed by a
  Linear ``model.head`` after global pooling (MobileNet-like).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UnsupportedError
from .base import CompressContext, TechniqueConfig


@dataclass(frozen=True)
class _FractionConfig(TechniqueConfig):
    structural = True  # weights are removed, not re-encoded
    fraction: float = 0.25

    def __post_init__(self) -> None:
        self._range("fraction", 0.0, 1.0)

    def label(self) -> str:
        return f"{self.type_tag.replace('_', ' ')} {self.fraction:.0%}"


@dataclass(frozen=True)
class HeadPruneConfig(_FractionConfig):
    """Remove ``fraction`` of the attention heads of every layer."""

    type_tag = "head_prune"


@dataclass(frozen=True)
class FfnPruneConfig(_FractionConfig):
    """Remove ``fraction`` of the hidden neurons of every feed-forward block."""

    type_tag = "ffn_prune"


@dataclass(frozen=True)
class ChannelPruneConfig(_FractionConfig):
    """Remove ``fraction`` of the output channels of every pointwise conv (and what they feed)."""

    type_tag = "channel_prune"


def _keep(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    n_keep = max(1, scores.numel() - int(round(fraction * scores.numel())))
    return scores.topk(n_keep).indices.sort().values


def _rows(layer: nn.Module, idx: torch.Tensor, dim: int) -> None:
    """Keep only ``idx`` along ``dim`` of the weight (0 = outputs, 1 = inputs) and bias."""
    layer.weight = nn.Parameter(layer.weight.detach().index_select(dim, idx).clone())
    if dim == 0 and getattr(layer, "bias", None) is not None:
        layer.bias = nn.Parameter(layer.bias.detach()[idx].clone())
    if isinstance(layer, nn.Linear):
        layer.out_features, layer.in_features = layer.weight.shape
    elif isinstance(layer, nn.Conv2d):
        layer.out_channels = layer.weight.shape[0]
        layer.in_channels = layer.weight.shape[1] * layer.groups


def _bn(bn: nn.BatchNorm2d, idx: torch.Tensor) -> None:
    bn.weight = nn.Parameter(bn.weight.detach()[idx].clone())
    bn.bias = nn.Parameter(bn.bias.detach()[idx].clone())
    bn.running_mean = bn.running_mean[idx].clone()
    bn.running_var = bn.running_var[idx].clone()
    bn.num_features = len(idx)


def _head_units(q, k, v, o, heads: int, head_dim: int, fraction: float) -> torch.Tensor:
    """Indices of the kept feature rows (whole heads) of q/k/v, ranked by weight norm."""
    w = torch.cat([q.weight, k.weight, v.weight], 1).detach()  # (heads*head_dim, 3*in)
    score = w.view(heads, -1).norm(dim=1) * o.weight.detach().t().reshape(heads, -1).norm(dim=1)
    kept_heads = _keep(score, fraction)
    return (kept_heads[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)


class _LlamaPrunedAttention(nn.Module):
    """Marker base: a Llama-style attention whose concatenated heads no longer equal the model dim."""


_PRUNED_CLASSES: dict[type, type] = {}


def _pruned_attention_class(cls: type) -> type:
    if cls in _PRUNED_CLASSES:
        return _PRUNED_CLASSES[cls]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        cos, sin = self.cos[:t], self.sin[:t]
        half = self.head_dim // 2
        q = q * cos + torch.cat((-q[..., half:], q[..., :half]), -1) * sin
        k = k * cos + torch.cat((-k[..., half:], k[..., :half]), -1) * sin
        scores = torch.matmul(q, k.transpose(-2, -1)) / (self.head_dim ** 0.5)
        probs = torch.softmax(scores + self.mask[:t, :t], dim=-1)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, -1)
        return self.o_proj(out)

    _PRUNED_CLASSES[cls] = type("HeadPruned" + cls.__name__, (cls, _LlamaPrunedAttention),
                                {"forward": forward})
    return _PRUNED_CLASSES[cls]


@torch.no_grad()
def apply_head_prune(model: nn.Module, config: HeadPruneConfig, ctx: CompressContext) -> nn.Module:
    """Remove the lowest-norm heads of every attention layer."""
    found = 0
    for module in list(model.modules()):
        if hasattr(module, "kv_heads"):
            raise UnsupportedError(
                "head pruning of a decoder with a KV cache (edge.models.llama) is not implemented: removing a "
                "query head must keep the grouped key/value heads and the cache shape consistent")
        if all(hasattr(module, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "heads", "head_dim")):
            idx = _head_units(module.q_proj, module.k_proj, module.v_proj, module.o_proj,
                              module.heads, module.head_dim, config.fraction)
            for lin in (module.q_proj, module.k_proj, module.v_proj):
                _rows(lin, idx, 0)
            _rows(module.o_proj, idx, 1)
            module.heads = len(idx) // module.head_dim
            if not isinstance(module, _LlamaPrunedAttention):
                module.__class__ = _pruned_attention_class(type(module))
            found += 1
        elif hasattr(module, "self") and hasattr(getattr(module, "self"), "query") and hasattr(module, "output"):
            sa, dense = module.self, module.output.dense
            idx = _head_units(sa.query, sa.key, sa.value, dense, sa.num_attention_heads,
                              sa.attention_head_size, config.fraction)
            for lin in (sa.query, sa.key, sa.value):
                _rows(lin, idx, 0)
            _rows(dense, idx, 1)
            sa.num_attention_heads = len(idx) // sa.attention_head_size
            sa.all_head_size = len(idx)
            found += 1
    if not found:
        raise UnsupportedError(
            "head_prune: expected Llama-style (q_proj/k_proj/v_proj/o_proj) or BERT attention "
            f"modules, found none in {type(model).__name__}")
    return model


@torch.no_grad()
def apply_ffn_prune(model: nn.Module, config: FfnPruneConfig, ctx: CompressContext) -> nn.Module:
    """Remove the lowest-norm hidden neurons of every feed-forward block."""
    found = 0
    for module in list(model.modules()):
        if all(hasattr(module, a) for a in ("gate_proj", "up_proj", "down_proj")):
            ins, out = [module.gate_proj, module.up_proj], module.down_proj
        elif hasattr(module, "intermediate") and hasattr(module, "output") \
                and hasattr(module.intermediate, "dense") and hasattr(module.output, "dense"):
            ins, out = [module.intermediate.dense], module.output.dense
        else:
            continue
        score = out.weight.detach().norm(dim=0)
        for lin in ins:
            score = score * lin.weight.detach().norm(dim=1)
        idx = _keep(score, config.fraction)
        for lin in ins:
            _rows(lin, idx, 0)
        _rows(out, idx, 1)
        found += 1
    if not found:
        raise UnsupportedError(
            "ffn_prune: expected SwiGLU (gate_proj/up_proj/down_proj) or BERT "
            f"(intermediate.dense + output.dense) blocks, found none in {type(model).__name__}")
    return model


@torch.no_grad()
def apply_channel_prune(model: nn.Module, config: ChannelPruneConfig,
                        ctx: CompressContext) -> nn.Module:
    """Remove pointwise-conv output channels, their BN entries and the consumers' inputs."""
    blocks = list(getattr(model, "blocks", []))
    head = getattr(model, "head", None)
    if not blocks or not isinstance(head, nn.Linear) or not all(
            all(hasattr(b, a) for a in ("dw", "bn1", "pw", "bn2")) for b in blocks):
        raise UnsupportedError(
            "channel_prune: expected depthwise-separable blocks (dw, bn1, pw, bn2) in model.blocks "
            f"followed by a Linear model.head, found {type(model).__name__}")
    for i, block in enumerate(blocks):
        score = block.pw.weight.detach().abs().flatten(1).sum(1) * block.bn2.weight.detach().abs()
        idx = _keep(score, config.fraction)
        _rows(block.pw, idx, 0)
        _bn(block.bn2, idx)
        if i + 1 < len(blocks):
            nxt = blocks[i + 1]
            _rows(nxt.dw, idx, 0)  # depthwise: one filter per channel
            nxt.dw.groups = nxt.dw.in_channels = nxt.dw.out_channels = len(idx)
            _bn(nxt.bn1, idx)
            _rows(nxt.pw, idx, 1)
        else:
            _rows(head, idx, 1)
    return model
