"""The compression-technique contract.

A technique is a frozen dataclass config (validated in ``__post_init__``) plus a function
``apply(model, config, ctx) -> model`` registered in :data:`edge.compress.TECHNIQUES`,
keyed by the config type. Configs round-trip to JSON through :meth:`TechniqueConfig.to_dict`
and :func:`config_from_dict` (a ``"type"`` tag names the technique).

``ctx`` (:class:`CompressContext`) carries the target backend, the :class:`ModelSpec` (its
``calib_inputs`` feed static quantization and distillation) and a mutable dict of export
options the backend reads (e.g. ``tflite_quantization``, ``executorch_quant_fusion``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Iterable

from ..errors import ConfigError

if TYPE_CHECKING:  # annotations only
    from ..models.base import ModelSpec

# Besides the registered backends a technique can target the host's "eager" flavour: the
# torchao-quantized eager model the planner measures (edge.backends.lowering).
EAGER = "eager"


@dataclass(frozen=True)
class TechniqueConfig:
    """Base of every technique config. Subclasses set ``type_tag`` and add fields."""

    type_tag: ClassVar[str] = ""
    # True when the technique changes what the model computes (pruning, factorization,
    # distillation), not just the number format its weights are stored in
    structural: ClassVar[bool] = False

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"type": self.type_tag}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def label(self) -> str:
        """Short human label, e.g. ``int4 g32 [ffn]``."""
        groups = getattr(self, "groups", ())
        return self.type_tag + (f" [{','.join(groups)}]" if groups else "")

    def _choice(self, name: str, allowed: Iterable) -> None:
        allowed = tuple(allowed)
        value = getattr(self, name)
        if value not in allowed:
            raise ConfigError(
                f"{self.type_tag}: expected {name} in {list(allowed)}, found {value!r}"
            )

    def _range(self, name: str, low: float, high: float, *, allow_none: bool = False) -> None:
        value = getattr(self, name)
        if value is None and allow_none:
            return
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not low < value < high:
            raise ConfigError(
                f"{self.type_tag}: expected {name} strictly between {low} and {high}, found {value!r}"
            )

    def _groups(self) -> None:
        from .groups import GROUP_NAMES

        groups = getattr(self, "groups", ())
        if isinstance(groups, str) or not isinstance(groups, tuple):
            raise ConfigError(f"{self.type_tag}: expected groups as a list of names, found {groups!r}")
        for g in groups:
            if g not in GROUP_NAMES:
                raise ConfigError(
                    f"{self.type_tag}: expected groups from {list(GROUP_NAMES)}, found {g!r}"
                )


@dataclass
class CompressContext:
    """What a technique may need besides the model: the backend, the spec and export options."""

    backend: str
    spec: ModelSpec = None  # edge.models.ModelSpec; None when no calibration data is needed
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from ..backends import BACKENDS

        if self.backend != EAGER and self.backend not in BACKENDS:
            raise ConfigError(f"expected backend in {[*BACKENDS, EAGER]}, found {self.backend!r}")


def config_from_dict(data: dict) -> TechniqueConfig:
    """Rebuild a technique config from its ``to_dict`` form; unknown type or keys are ConfigErrors."""
    from . import TECHNIQUES

    if not isinstance(data, dict) or "type" not in data:
        raise ConfigError(f"expected a technique as a mapping with a 'type' key, found {data!r}")
    by_tag = {cls.type_tag: cls for cls in TECHNIQUES}
    tag = data["type"]
    if tag not in by_tag:
        raise ConfigError(f"expected technique type in {sorted(by_tag)}, found {tag!r}")
    cls = by_tag[tag]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names - {"type"})
    if unknown:
        raise ConfigError(f"{tag}: unknown keys {unknown}; allowed {sorted(names)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k != "type"}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{tag}: {exc}") from exc
