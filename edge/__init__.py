"""edge: plan, compress, export, deploy and benchmark PyTorch models on edge devices.

The Python API mirrors the command line; everything loads on first use, so
``import edge`` stays cheap (no torch, no toolchains)::

    import edge

    plan = edge.plan("tiny-cnn", "raspberry-pi-4-4gb", max_size_mb=1)
    artifact = edge.export("tiny-cnn", "executorch", "out/tiny-cnn", plan=plan)
    result = edge.bench(artifact.path, "local", iterations=50)
    run = edge.compare("tiny-cnn", "raspberry-pi-4-4gb", "local", out_dir="out")

``edge.compare`` and ``edge.bench`` import their implementation on the first call;
their other attributes are read from the implementation module (``edge.compare.CompareResult``).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"


class _LazyFunction:
    """An API function whose implementation module is imported on the first call.

    Calling it calls ``<module>.<function>``; any other attribute is read from that module,
    as when ``edge.compare`` and ``edge.bench`` were the modules themselves. The module must
    not be named like the attribute holding this object: importing ``edge.<name>`` would
    rebind ``edge.<name>`` to the module.
    """

    def __init__(self, module: str, function: str, doc: str) -> None:
        self._module, self._function = module, function
        self.__name__, self.__doc__ = function, doc

    def __call__(self, *args, **kwargs):
        return getattr(importlib.import_module(self._module), self._function)(*args, **kwargs)

    def __getattr__(self, attr: str):
        if attr.startswith("__"):  # introspection (copy, pickle, inspect) must not import a toolchain
            raise AttributeError(attr)
        return getattr(importlib.import_module(self._module), attr)

    def __repr__(self) -> str:
        return f"<edge API function {self._module}.{self._function}>"


def plan(model, profile, min_accuracy: float | None = None, max_latency_ms: float | None = None,
         max_size_mb: float | None = None, backends=None):
    """Plan for ``model`` (zoo name, file.py:factory, HF dir or ModelSpec) on ``profile``
    (a profile name, YAML path or DeviceProfile); see :func:`edge.planner.make_plan`."""
    from .models import load_model
    from .planner import Constraints, make_plan
    from .profiles import load_profile

    spec = load_model(model) if isinstance(model, str) else model
    prof = load_profile(profile) if isinstance(profile, str) else profile
    if isinstance(backends, str):
        backends = None if backends == "all" else [b.strip() for b in backends.split(",")]
    given = {"min_accuracy": min_accuracy, "max_latency_ms": max_latency_ms, "max_size_mb": max_size_mb}
    constraints = Constraints(**{k: v for k, v in given.items() if v is not None})
    return make_plan(spec, prof, constraints, backends=backends)


compare = _LazyFunction(
    "edge.comparison", "compare",
    "Plan, export, validate and bench ``model`` on ``target`` for every backend, then report and store the "
    "run; see :func:`edge.comparison.compare`.")
bench = _LazyFunction(
    "edge.benchmark", "bench",
    "Deploy an artifact to ``target`` and time it there with the on-device runner; see "
    ":func:`edge.benchmark.bench`.")


def __getattr__(name: str):
    # edge.export is edge.exporter.export itself, imported on first access
    if name != "export":
        raise AttributeError(f"module 'edge' has no attribute '{name}'")
    from .exporter import export

    globals()["export"] = export
    return export


__all__ = ["__version__", "plan", "export", "bench", "compare"]
