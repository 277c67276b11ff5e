"""Which backend can express which technique: read from the backends themselves.

Each backend declares what it cannot express (``unsupported_techniques``) and the per-config
conditions (``unsupported_reason``: whole-model quantization only, no int4 embeddings ...).
:data:`CAPABILITIES` is the resulting table, ``CAPABILITIES[type_tag][backend]`` being None
when the backend expresses the technique, else the reason it cannot; the host's ``eager``
flavour expresses everything. Backends implement ``unsupported(plan)`` as
``unsupported_in_recipe(plan, self.name)``.
"""
from __future__ import annotations

from typing import Any, Iterable

from .base import TechniqueConfig

EAGER = "eager"


def _table() -> dict[str, dict[str, str | None]]:
    from ..backends import BACKENDS, get_backend
    from . import TECHNIQUES

    out = {}
    for cls in TECHNIQUES:
        row = {name: get_backend(name).unsupported_techniques.get(cls.type_tag) for name in BACKENDS}
        out[cls.type_tag] = {**row, EAGER: None}
    return out


def __getattr__(name: str):  # CAPABILITIES is computed on first use (reading it imports the backends)
    if name == "CAPABILITIES":
        return _table()
    raise AttributeError(name)


def unsupported_reason(config: TechniqueConfig, backend: str) -> str | None:
    """Why ``backend`` cannot express ``config``, or None when it can."""
    from ..backends import BACKENDS, get_backend
    from . import TECHNIQUES

    if config.type_tag not in {cls.type_tag for cls in TECHNIQUES}:
        return f"unknown technique {config.type_tag!r}"
    if backend == EAGER:
        return None
    if backend not in BACKENDS:
        return f"unknown backend {backend!r}; expected one of {sorted([*BACKENDS, EAGER])}"
    return get_backend(backend).unsupported_reason(config)


def recipe_of(plan: Any) -> list[TechniqueConfig]:
    """The technique configs of a Plan, a plan dict, or a list of configs/dicts."""
    from .base import config_from_dict

    if plan is None:
        return []
    if hasattr(plan, "recipe"):
        plan = plan.recipe
    elif isinstance(plan, dict):
        plan = plan.get("recipe", [])
    return [c if isinstance(c, TechniqueConfig) else config_from_dict(c) for c in plan]


def unsupported_in_recipe(plan: Any, backend: str) -> list[str]:
    """One line per step of ``plan`` that ``backend`` cannot express (empty list = all fine)."""
    out = []
    steps: Iterable[TechniqueConfig] = recipe_of(plan)
    for config in steps:
        reason = unsupported_reason(config, backend)
        if reason:
            out.append(f"{config.label()} on {backend}: {reason}")
    if backend != EAGER and _whole_model_only(backend):
        whole = [c for c in steps if c.type_tag in WHOLE_MODEL_QUANTIZATION]
        if len(whole) > 1:
            out.append(f"{backend}: only one whole-model quantization per conversion, found "
                       + ", ".join(c.label() for c in whole))
    return out


# techniques a whole-model-quantization backend applies at conversion, one per artifact
WHOLE_MODEL_QUANTIZATION = ("int8_dynamic", "int8_static", "fp16")


def _whole_model_only(backend: str) -> bool:
    from ..backends import BACKENDS, get_backend

    return backend in BACKENDS and get_backend(backend).whole_model_quantization
