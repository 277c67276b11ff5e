"""edge: plan, compress, export, deploy and benchmark PyTorch models on edge devices.

The Python API mirrors the command line; everything loads on first use, so
``import edge`` stays cheap (no torch, no toolchains)::

    import edge

    plan = edge.plan("tiny-cnn", "raspberry-pi-4-4gb", max_size_mb=1)
    artifact = edge.export("tiny-cnn", "executorch", "out/tiny-cnn", plan=plan)
    result = edge.bench(artifact.path, "local", iterations=50)
    run = edge.compare("tiny-cnn", "raspberry-pi-4-4gb", "local", out_dir="out")

``edge.compare`` and ``edge.bench`` are also the modules of the same name; calling the
module calls its function.
"""
from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"


class _VerbModule(types.ModuleType):
    """A module that is also its main function: ``edge.compare(...)`` is ``edge.compare.compare(...)``."""

    def __call__(self, *args, **kwargs):
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


def verb_module(module_name: str) -> None:
    """Make ``edge.<verb>`` (a module named after its main function) callable as that function."""
    module = sys.modules[module_name]
    if not isinstance(module, _VerbModule):
        module.__class__ = _VerbModule


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


# attribute -> (module, function); imported on first access
_LAZY = {
    "export": ("edge.exporter", "export"),
    "bench": ("edge.bench", None),
    "compare": ("edge.compare", None),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'edge' has no attribute '{name}'")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    if attr is None:
        verb_module(module_name)
        value = module
    else:
        value = getattr(module, attr)
    globals()[name] = value
    return value


__all__ = ["__version__", "plan", "export", "bench", "compare"]
