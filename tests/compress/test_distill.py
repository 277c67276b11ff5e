"""Distillation: a trained shallow student beats the untrained truncated one on held-out data."""
from __future__ import annotations

import pytest

from edge.compress import CompressContext, DistillConfig, apply
from edge.compress.distill import truncated_student
from edge.errors import ConfigError, UnsupportedError

from compress_helpers import eval_score, n_params


def test_distilled_student_beats_truncated_student(tiny_lm):
    config = DistillConfig(keep_layers=2, steps=40, time_budget_s=20.0, lr=2e-3)
    student = apply(tiny_lm.fresh_model(), config, CompressContext("eager", tiny_lm))
    baseline = truncated_student(tiny_lm.fresh_model(), 2)
    assert len(student.layers) == 2
    assert n_params(student) == n_params(baseline) < n_params(tiny_lm.model)
    # evaluation inputs were never seen in training (calibration inputs only)
    assert eval_score(tiny_lm, student) > eval_score(tiny_lm, baseline)


def test_distill_needs_blocks_data_and_a_shallower_student(tiny_lm, tiny_mlp):
    with pytest.raises(UnsupportedError, match="repeated blocks"):
        apply(tiny_mlp.fresh_model(), DistillConfig(), CompressContext("eager", tiny_mlp))
    with pytest.raises(ConfigError, match="calib_inputs"):
        apply(tiny_lm.fresh_model(), DistillConfig(), CompressContext("eager"))
    with pytest.raises(ConfigError, match="keep_layers < 3"):
        truncated_student(tiny_lm.fresh_model(), 3)
