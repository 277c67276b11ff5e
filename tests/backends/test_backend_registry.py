from pathlib import Path

import pytest

from edge.backends import BACKENDS, get_backend
from edge.backends.base import Backend
from edge.errors import ConfigError

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_backend_has_a_test_file_and_matching_name(name):
    assert (HERE / f"test_{name}.py").exists(), f"backend {name} has no tests/backends/test_{name}.py"
    backend = get_backend(name)
    assert isinstance(backend, Backend)
    assert backend.name == name
    assert backend.suffix in (".ptl", ".pte", ".tflite")
    assert backend.unsupported(None) == []
    assert "torch" in backend.tool_versions()


def test_unknown_backend_names_the_choices():
    with pytest.raises(ConfigError, match="torchscript"):
        get_backend("coreml")


def test_unknown_option_is_rejected_naming_key_and_allowed():
    with pytest.raises(ConfigError, match="tflite_quantizaton.*tflite_quantization"):
        get_backend("tflite").check_options({"tflite_quantizaton": "integer"})
    with pytest.raises(ConfigError, match="int3"):
        get_backend("tflite").check_options({"tflite_quantization": "int3"})
    assert get_backend("executorch").check_options({}) == {"executorch_quant_fusion": False}
