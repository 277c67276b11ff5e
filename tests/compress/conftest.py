"""Fixtures for technique tests: zoo specs (helpers live in compress_helpers.py)."""
from __future__ import annotations

import pytest
import torch

from edge.models import load_model

# Two cores shared by parallel jobs: one intra-op thread avoids oversubscription (4-5x faster here).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_lm():
    return load_model("tiny-lm")


@pytest.fixture(scope="session")
def tiny_cnn():
    return load_model("tiny-cnn")


@pytest.fixture(scope="session")
def tiny_mlp():
    return load_model("tiny-mlp")
