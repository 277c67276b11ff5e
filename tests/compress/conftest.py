"""Fixtures for technique tests: zoo specs (helpers live in compress_helpers.py)."""
from __future__ import annotations

import pytest

from edge.models import load_model


@pytest.fixture(scope="session")
def tiny_lm():
    return load_model("tiny-lm")


@pytest.fixture(scope="session")
def tiny_cnn():
    return load_model("tiny-cnn")


@pytest.fixture(scope="session")
def tiny_mlp():
    return load_model("tiny-mlp")
