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
    assert backend.suffix in (".ptl", ".pte", ".tflite", ".gguf")
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


def test_runner_loaders_generators_and_registry_name_the_same_backends():
    from edge.runner.runner import LOADERS
    from edge.runner.runner_generate import GENERATORS

    assert {get_backend(n).runner_loader for n in BACKENDS} == set(LOADERS) == set(GENERATORS)
    for name in BACKENDS:
        assert get_backend(name).runner_loader == name


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_backend_contract_exports_and_validates_tiny_mlp(name, tmp_path, artifact_cache):
    """Every registered backend: declared traits, then a real export validated in its runtime
    (tiny-mlp; tiny-llama for a backend that converts language models only)."""
    from edge.backends.base import CostTraits
    from edge.exporter import export

    backend = get_backend(name)
    assert isinstance(backend.traits, CostTraits) and backend.traits.efficiency > 0
    assert backend.runtime_modules and all(len(pair) == 2 for pair in backend.runtime_modules)
    assert backend.host_flavour in ("eager", name)
    model = "tiny-llama" if backend.language_models_only else "tiny-mlp"
    if name == "llamacpp":
        from edge.runner.runner_llamacpp import cpu_problem

        if cpu_problem():  # a CPU the prebuilt llama.cpp cannot run on: the error must say so
            from edge.errors import UnsupportedError

            with pytest.raises(UnsupportedError, match="AVX2|x86_64 and aarch64"):
                export(model, name, tmp_path, cache_dir=artifact_cache)
            return
    art = export(model, name, tmp_path, cache_dir=artifact_cache)
    assert art.path.suffix == backend.suffix and art.manifest["backend"] == name
    assert art.manifest["validation"]["passed"] and art.manifest["validation"]["precision"] == "fp32"


def test_an_unknown_backend_never_falls_back_silently():
    from edge.backends.lowering import lowering_for
    from edge.compress import CompressContext, Int8DynamicConfig, apply, unsupported_reason
    from edge.planner.sensitivity import flavour_of

    with pytest.raises(ConfigError, match="expected a backend in"):
        lowering_for("coreml")
    with pytest.raises(ConfigError, match="expected a backend in"):
        flavour_of("coreml")
    with pytest.raises(ConfigError, match="expected backend in"):
        apply(None, Int8DynamicConfig(), CompressContext("coreml"))
    assert "unknown backend 'coreml'" in unsupported_reason(Int8DynamicConfig(), "coreml")
