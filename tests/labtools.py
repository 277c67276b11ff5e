"""scripts/devicelab as a module, for the fixtures and the lab's own tests (a plain module:
``from conftest import ...`` would find whichever of the suite's conftests loaded first)."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
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


def command_lines() -> list[str]:
    """The command line of every process (the lab's devices are local processes)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip())
            except OSError:
                pass
    return out


def process_running(text: str, exact: bool = False) -> bool:
    """Whether a process whose command line contains (or, ``exact``, is) ``text`` runs."""
    return any(cmd == text if exact else text in cmd for cmd in command_lines())
