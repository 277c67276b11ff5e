"""Reading and writing plans (the planner's only I/O): YAML or JSON, chosen by file suffix."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..errors import ConfigError
from ..fileio import parse_json, parse_yaml, read_utf8
from .plan import Plan

_SUFFIXES = (".yaml", ".yml", ".json")


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in _SUFFIXES:
        raise ConfigError(f"expected a plan file ending in {', '.join(_SUFFIXES)}, found {path.name!r}")


def save_plan(plan: Plan, path: str | Path) -> Path:
    """Write ``plan`` as YAML (.yaml/.yml) or JSON (.json); returns the path."""
    path = Path(path).expanduser()
    _check_suffix(path)
    data = plan.to_dict()
    if path.suffix.lower() == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load_plan(path: str | Path) -> Plan:
    """Read a plan written by :func:`save_plan` (or by hand); bad content raises ConfigError."""
    path = Path(path).expanduser()
    _check_suffix(path)
    if not path.is_file():
        raise ConfigError(f"expected a plan file at {path}, found none; write one with `edge plan -o`")
    text = read_utf8(path, "plan file")
    data = parse_json(text, path) if path.suffix.lower() == ".json" else parse_yaml(text, path)
    return Plan.from_dict(data, source=str(path))
