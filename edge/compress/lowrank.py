"""Low-rank factorization: replace ``nn.Linear(in, out)`` by ``Linear(in, r) -> Linear(r, out)``.

The rank comes from an energy threshold (smallest r whose singular values keep
``energy`` of the squared spectrum) or a fixed ``rank_ratio`` of min(in, out). A layer is
only factorized when that saves parameters: r * (in + out) < in * out.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .base import CompressContext, TechniqueConfig
from .groups import selects

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LowRankConfig(TechniqueConfig):
    """SVD factorization of Linear layers; exactly one of ``energy`` / ``rank_ratio`` is set."""

    type_tag = "low_rank"
    structural = True
    energy: float | None = 0.9
    rank_ratio: float | None = None
    groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.energy is None) == (self.rank_ratio is None):
            raise ConfigError(
                f"low_rank: expected exactly one of energy / rank_ratio, found energy={self.energy!r}, "
                f"rank_ratio={self.rank_ratio!r}")
        self._range("energy", 0.0, 1.0 + 1e-9, allow_none=True)
        self._range("rank_ratio", 0.0, 1.0, allow_none=True)
        self._groups()
        bad = set(self.groups) - {"attention", "ffn", "head", "linear"}
        if bad:
            raise ConfigError(f"low_rank: expected Linear groups (attention, ffn, head, linear), found {sorted(bad)}")

    def label(self) -> str:
        what = f"energy {self.energy:g}" if self.energy is not None else f"rank {self.rank_ratio:.0%}"
        return f"low-rank {what}" + (f" [{','.join(self.groups)}]" if self.groups else "")


def choose_rank(singular_values: torch.Tensor, config: LowRankConfig) -> int:
    """The rank that keeps ``energy`` of sum(s^2), or ``rank_ratio`` of the full rank."""
    if config.rank_ratio is not None:
        return max(1, int(round(config.rank_ratio * singular_values.numel())))
    energy = singular_values.pow(2).cumsum(0) / singular_values.pow(2).sum()
    return int((energy < config.energy).sum()) + 1


@torch.no_grad()
def factorize(linear: nn.Linear, rank: int) -> nn.Sequential:
    """Two Linears whose product is the best rank-``rank`` approximation of ``linear``."""
    u, s, vh = torch.linalg.svd(linear.weight.detach().float(), full_matrices=False)
    root = s[:rank].sqrt()
    first = nn.Linear(linear.in_features, rank, bias=False)
    second = nn.Linear(rank, linear.out_features, bias=linear.bias is not None)
    first.weight.copy_(root[:, None] * vh[:rank])
    second.weight.copy_(u[:, :rank] * root[None, :])
    if linear.bias is not None:
        second.bias.copy_(linear.bias)
    return nn.Sequential(first, second)


@torch.no_grad()
def apply_low_rank(model: nn.Module, config: LowRankConfig, ctx: CompressContext) -> nn.Module:
    """Factorize every selected Linear where the chosen rank saves parameters."""
    targets = [(n, m) for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and selects(config.groups, n, m)]
    for name, linear in targets:
        s = torch.linalg.svdvals(linear.weight.detach().float())
        rank = choose_rank(s, config)
        if rank * (linear.in_features + linear.out_features) >= linear.in_features * linear.out_features:
            log.debug("low_rank: keeping %s dense (rank %d saves nothing)", name, rank)
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, factorize(linear, rank))
    return model
