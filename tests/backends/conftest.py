"""Fixtures for backend tests: user models from tests/fixtures/export_models.py and one export folder (the artifact cache is the root conftest's)."""
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
EXPORT_MODELS = FIXTURES / "export_models.py"


@pytest.fixture(scope="session")
def user_model():
    """``user_model("branchy")``: a file.py:factory reference into tests/fixtures/export_models.py."""
    return lambda factory: f"{EXPORT_MODELS}:{factory}"


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("exports")
