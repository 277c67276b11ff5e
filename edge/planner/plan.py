"""Plan: the planner's answer, as data that round-trips through YAML/JSON.

Keys (schema_version 1): ``model``, ``profile``, ``constraints`` {min_accuracy,
max_latency_ms, max_size_mb, memory_budget_mb, storage_budget_mb}, ``backend``, ``recipe``
(technique configs in the order they are applied, each with its ``type`` tag), ``groups``
(layer group -> chosen precision), ``structure`` (structural technique or null),
``tag`` (a short name derived from groups, structure and a KV cache type the recipe sets, used
in artifact folder names),
``predicted`` {size_bytes, size_mb, peak_memory_mb = runtime_memory_mb (the runtime's own RSS) +
model_memory_mb (what the model adds; plans written before the split lack both), latency_ms, accuracy},
``accuracy_basis`` (how the accuracy was obtained), ``pareto`` (alternatives, each with
backend, groups, structure, recipe labels and predictions), ``reasons`` (one line per
option taken or rejected), ``notes`` (cost-model assumptions in force).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from ..compress import TechniqueConfig, config_from_dict
from ..defaults import MIN_ACCURACY
from ..errors import ConfigError

PLAN_SCHEMA_VERSION = 1
_REQUIRED = ("model", "profile", "constraints", "backend", "recipe", "predicted")
_OPTIONAL = ("schema_version", "tag", "groups", "structure", "accuracy_basis", "pareto", "reasons", "notes")


def plan_tag(structure: str | None, groups: dict[str, str], recipe: list | None = None) -> str:
    """A plan's short name from its structural change, per-group precisions and a KV cache type
    its recipe sets (``kv:q8_0``); "fp32" when none. ``recipe``: configs or their dicts."""
    parts = [structure.replace(" ", "") if structure and structure != "none" else ""]
    parts += [f"{g}:{p}" for g, p in sorted(groups.items()) if p != "fp32"]
    steps = [c if isinstance(c, dict) else c.to_dict() for c in recipe or []]
    parts += [f"kv:{c.get('dtype')}" for c in steps if c.get("type") == "kv_cache"]
    return "-".join(p for p in parts if p) or "fp32"


@dataclass(frozen=True)
class Constraints:
    """What the plan must satisfy; None means unconstrained."""

    min_accuracy: float = MIN_ACCURACY
    max_latency_ms: float | None = None  # language models: one decode step (ms per generated token)
    max_size_mb: float | None = None
    # language models only
    context: int | None = None  # the context the plan must hold (default: the model's export context)
    min_decode_tok_s: float | None = None
    max_ttft_ms: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.min_accuracy, (int, float)) or not 0.0 <= self.min_accuracy <= 1.0:
            raise ConfigError(f"expected min_accuracy between 0 and 1, found {self.min_accuracy!r}")
        if self.context is not None and (isinstance(self.context, bool) or not isinstance(self.context, int)
                                         or self.context < 1):
            raise ConfigError(f"expected context as a whole number of tokens >= 1, found {self.context!r}")
        for name in ("max_latency_ms", "max_size_mb", "min_decode_tok_s", "max_ttft_ms"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 < value <= sys.float_info.max):  # NaN, inf, 10**400 fail
                raise ConfigError(f"expected {name} > 0 and finite, or unset, found {value!r}")


@dataclass
class Plan:
    """The chosen recipe for one backend, its predictions, the alternatives and the reasons."""

    model: str
    profile: str
    constraints: dict
    backend: str
    recipe: list[TechniqueConfig]
    predicted: dict
    groups: dict[str, str] = field(default_factory=dict)
    structure: str | None = None
    accuracy_basis: str = ""
    pareto: list[dict] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    schema_version: int = PLAN_SCHEMA_VERSION

    @property
    def tag(self) -> str:
        """Short name for folders and tables, e.g. ``channelprune25%-conv:fp16-head:int8``."""
        return plan_tag(self.structure, self.groups, self.recipe)

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version, "tag": self.tag, "model": self.model,
            "profile": self.profile,
            "constraints": dict(self.constraints), "backend": self.backend,
            "recipe": [c.to_dict() for c in self.recipe], "groups": dict(self.groups),
            "structure": self.structure, "predicted": dict(self.predicted),
            "accuracy_basis": self.accuracy_basis, "pareto": list(self.pareto),
            "reasons": list(self.reasons), "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "<plan>") -> Plan:
        """Validate plain data; unknown or missing keys and bad recipes are ConfigErrors."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a plan mapping, found {type(data).__name__}")
        missing = [k for k in _REQUIRED if k not in data]
        unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL), key=str)
        if missing or unknown:
            raise ConfigError(f"{source}: expected plan keys {list(_REQUIRED)} (optional {list(_OPTIONAL)}); "
                              f"missing {missing}, unknown {unknown}")
        version = data.get("schema_version", PLAN_SCHEMA_VERSION)
        if version != PLAN_SCHEMA_VERSION:
            raise ConfigError(f"{source}: expected schema_version {PLAN_SCHEMA_VERSION}, found {version!r}")
        _check_fields(data, source)
        try:
            recipe = [config_from_dict(c) for c in data["recipe"]]
        except ConfigError as exc:
            raise ConfigError(f"{source}: recipe: {exc}") from exc
        return cls(model=data["model"], profile=data["profile"],
                   constraints=data["constraints"], backend=data["backend"], recipe=recipe,
                   predicted=data["predicted"], groups=dict(data.get("groups") or {}),
                   structure=data.get("structure"), accuracy_basis=data.get("accuracy_basis") or "",
                   pareto=list(data.get("pareto") or []), reasons=list(data.get("reasons") or []),
                   notes=list(data.get("notes") or []), schema_version=version)


# constraint keys a plan file may hold: Constraints' fields plus the budgets the profile gave the planner
_CONSTRAINT_KEYS = (*Constraints.__dataclass_fields__, "memory_budget_mb", "storage_budget_mb")


def _check_fields(data: dict, source: str) -> None:
    """Types and ranges of a plan's fields (Plan.from_dict has checked its keys); a ConfigError naming the field."""
    from ..backends import BACKENDS

    def fail(key: str, expected: str) -> ConfigError:
        value = data.get(key)
        return ConfigError(f"{source}: {key}: expected {expected}, found {value!r}")

    for key in ("model", "profile"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise fail(key, "a non-empty name")
    if not isinstance(data["backend"], str) or data["backend"] not in BACKENDS:
        raise fail("backend", "one of " + ", ".join(BACKENDS))
    if not isinstance(data["recipe"], list) or not all(
            isinstance(c, dict) and isinstance(c.get("type"), str) for c in data["recipe"]):
        raise fail("recipe", "a list of technique mappings, each with a 'type' name")
    constraints = data["constraints"]
    if not isinstance(constraints, dict) or set(constraints) - set(_CONSTRAINT_KEYS):
        raise fail("constraints", "a mapping with keys from " + ", ".join(_CONSTRAINT_KEYS))
    _check_numbers(constraints, "constraints", source)
    try:
        Constraints(**{k: v for k, v in constraints.items() if k in Constraints.__dataclass_fields__
                       and v is not None})
    except ConfigError as exc:
        raise ConfigError(f"{source}: constraints: {exc}") from None
    if not isinstance(data["predicted"], dict):
        raise fail("predicted", "a mapping of predicted figures")
    _check_numbers(data["predicted"], "predicted", source)
    groups = data.get("groups")
    if groups is not None and not (isinstance(groups, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in groups.items())):
        raise fail("groups", "a mapping of layer group name to precision name")
    for key in ("structure", "accuracy_basis"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise fail(key, "text or null")
    for key, kind, what in (("pareto", dict, "mappings"), ("reasons", str, "text"), ("notes", str, "text")):
        value = data.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, kind) for v in value)):
            raise fail(key, f"a list of {what}")


def _check_numbers(value: Any, where: str, source: str) -> None:
    """Every leaf of a (nested) mapping of figures is null or a finite number >= 0."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{source}: {where}: expected text keys, found {key!r}")
            _check_numbers(item, f"{where}.{key}", source)
    elif value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                or not 0 <= value <= sys.float_info.max):
        raise ConfigError(f"{source}: {where}: expected a finite number >= 0 or null, found {value!r}")
