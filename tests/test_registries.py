"""Every plug-in in every registry has tests: a new plug-in without one fails here."""
from pathlib import Path

import pytest

from edge.backends import BACKENDS
from edge.compress import TECHNIQUES
from edge.transports import TRANSPORTS

TESTS = Path(__file__).resolve().parent


def _test_text(folder: str) -> str:
    return "\n".join(p.read_text() for p in sorted((TESTS / folder).glob("test_*.py")))


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_backend_has_its_test_file(name):
    assert (TESTS / "backends" / f"test_{name}.py").is_file()


@pytest.mark.parametrize("name", sorted(TRANSPORTS))
def test_transport_has_its_test_file(name):
    assert (TESTS / "transports" / f"test_{name}.py").is_file()


@pytest.mark.parametrize("config_type", sorted(TECHNIQUES, key=lambda t: t.__name__), ids=lambda t: t.__name__)
def test_technique_is_exercised_by_a_compress_test(config_type):
    assert config_type.__name__ in _test_text("compress"), (
        f"{config_type.__name__} is registered but no tests/compress/test_*.py uses it")


