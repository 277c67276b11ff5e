"""Every registered transport is a Transport and has its own test file."""
from __future__ import annotations

from pathlib import Path

from edge.transports import TRANSPORTS, transport_class
from edge.transports.base import Transport


def test_every_transport_has_a_test_file():
    here = Path(__file__).parent
    for name in TRANSPORTS:
        assert issubclass(transport_class(name), Transport)
        assert transport_class(name).name == name
        assert (here / f"test_{name}.py").exists(), f"transport {name} has no test file"
