"""Low-rank factorization: fewer parameters, outputs close to the dense layer at high energy."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from edge.compress import CompressContext, LowRankConfig, apply
from edge.compress.lowrank import choose_rank, factorize
from edge.errors import ConfigError

from compress_helpers import eval_score, n_params


def test_factorize_full_rank_is_exact():
    torch.manual_seed(0)
    lin = nn.Linear(32, 16)
    x = torch.randn(4, 32)
    assert torch.allclose(factorize(lin, 16)(x), lin(x), atol=1e-5)


def test_choose_rank_by_energy_and_ratio():
    s = torch.tensor([10.0, 1.0, 0.1, 0.01])
    assert choose_rank(s, LowRankConfig(energy=0.9)) == 1
    assert choose_rank(s, LowRankConfig(energy=0.99999)) == 3
    assert choose_rank(s, LowRankConfig(energy=None, rank_ratio=0.5)) == 2


def test_low_rank_ratio_cuts_params(tiny_mlp):
    model = apply(tiny_mlp.fresh_model(), LowRankConfig(energy=None, rank_ratio=0.25),
                  CompressContext("eager"))
    assert isinstance(model.fc2, nn.Sequential) and model.fc2[0].out_features == 32
    assert n_params(model) < 0.7 * n_params(tiny_mlp.model)
    assert model(*tiny_mlp.example_inputs).shape == (1, 10)


def test_low_rank_high_energy_keeps_accuracy_low_energy_loses_it(tiny_lm):
    # Random-init weights have flat spectra: only a near-full energy keeps the model intact.
    keep = apply(tiny_lm.fresh_model(), LowRankConfig(energy=0.999), CompressContext("eager"))
    cut = apply(tiny_lm.fresh_model(), LowRankConfig(energy=0.5), CompressContext("eager"))
    assert eval_score(tiny_lm, cut) < eval_score(tiny_lm, keep)
    assert n_params(cut) < 0.8 * n_params(tiny_lm.model)


def test_low_rank_needs_exactly_one_rank_rule():
    with pytest.raises(ConfigError, match="exactly one"):
        LowRankConfig(energy=0.9, rank_ratio=0.5)
    with pytest.raises(ConfigError, match="Linear groups"):
        LowRankConfig(groups=("embedding",))
