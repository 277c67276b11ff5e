"""Export backends: one file per runtime format, one line per backend in :data:`BACKENDS`.

Each backend turns an eager ``nn.Module`` into a deployable file (see
:class:`edge.backends.base.Backend`). Toolchains are heavy, so the registry names
``"module:Class"`` strings that are imported on first use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:  # base imports torch; reading BACKENDS must stay cheap
    from .base import Backend

BACKENDS: dict[str, str] = {
    "torchscript": "edge.backends.torchscript:TorchScriptBackend",
    "executorch": "edge.backends.executorch:ExecuTorchBackend",
    "tflite": "edge.backends.tflite:TFLiteBackend",
    "llamacpp": "edge.backends.llamacpp:LlamaCppBackend",
}

_INSTANCES: dict[str, "Backend"] = {}


def get_backend(name: str) -> "Backend":
    """The backend registered as ``name`` (imported and instantiated once per process)."""
    if name not in BACKENDS:
        raise ConfigError(f"expected a backend in {list(BACKENDS)}, found {name!r}")
    if name not in _INSTANCES:
        module_name, _, cls_name = BACKENDS[name].partition(":")
        _INSTANCES[name] = getattr(importlib.import_module(module_name), cls_name)()
    return _INSTANCES[name]


__all__ = ["BACKENDS", "get_backend"]
