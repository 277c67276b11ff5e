"""Fixtures for planner tests: zoo specs and shipped device profiles."""
from __future__ import annotations

import pytest

from edge.profiles import load_profile


@pytest.fixture(scope="session")
def pi_zero():
    return load_profile("raspberry-pi-zero-2w")


@pytest.fixture(scope="session")
def pi5():
    return load_profile("raspberry-pi-5-8gb")
