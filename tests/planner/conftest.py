"""Fixtures for planner tests: zoo specs and shipped device profiles."""
from __future__ import annotations

from pathlib import Path

import pytest

from edge.profiles import load_profile


@pytest.fixture(scope="session")
def pi_zero():
    return load_profile("raspberry-pi-zero-2w")


@pytest.fixture(scope="session")
def pi5():
    return load_profile("raspberry-pi-5-8gb")


@pytest.fixture(scope="session")
def tiny_llama_hd32():
    """tiny-llama widened to heads 32 wide (same logits), so llama.cpp's q8_0 cache can hold it."""
    from edge.models import load_model

    return load_model(f"{Path(__file__).resolve().parents[1] / 'fixtures' / 'lm_models.py'}:tiny_llama_hd32")
