"""scripts/devicelab as a module, for the fixtures and the lab's own tests (a plain module:
``from conftest import ...`` would find whichever of the suite's conftests loaded first)."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_devicelab() -> types.ModuleType:
    """scripts/devicelab as a module (it is a script without .py)."""
    path = str(REPO / "scripts" / "devicelab")
    loader = importlib.machinery.SourceFileLoader("devicelab", path)
    spec = importlib.util.spec_from_file_location("devicelab", path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module
