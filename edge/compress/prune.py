"""Unstructured magnitude pruning: zero the smallest-magnitude weights of each layer.

Zeros keep tensor shapes, so dense runtimes (XNNPACK, the lite interpreter, TFLite) run
the same kernels over the same bytes: no size or latency gain unless the artifact is
compressed on disk (zip/gzip) or a sparse kernel is used. It is offered because it
compresses well and as a baseline for structured pruning, which does shrink the model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import CompressContext, TechniqueConfig
from .groups import selects


@dataclass(frozen=True)
class MagnitudePruneConfig(TechniqueConfig):
    """Zero the fraction ``sparsity`` of smallest |w| in every selected layer's weight."""

    type_tag = "magnitude_prune"
    structural = True
    sparsity: float = 0.5
    groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._range("sparsity", 0.0, 1.0)
        self._groups()

    def label(self) -> str:
        return f"magnitude prune {self.sparsity:.0%}" + (
            f" [{','.join(self.groups)}]" if self.groups else "")


@torch.no_grad()
def apply_magnitude_prune(model: nn.Module, config: MagnitudePruneConfig,
                          ctx: CompressContext) -> nn.Module:
    """Zero the smallest weights per layer (shapes unchanged)."""
    for name, module in model.named_modules():
        if not selects(config.groups, name, module):
            continue
        weight = module.weight
        k = int(config.sparsity * weight.numel())
        if k < 1:
            continue
        threshold = weight.abs().flatten().kthvalue(k).values
        weight.masked_fill_(weight.abs() <= threshold, 0.0)
    return model


def sparsity_of(model: nn.Module) -> float:
    """Fraction of exactly-zero values among Linear/Conv/Embedding weights."""
    zeros = total = 0
    for name, module in model.named_modules():
        if selects((), name, module):
            zeros += int((module.weight == 0).sum())
            total += module.weight.numel()
    return zeros / max(total, 1)
