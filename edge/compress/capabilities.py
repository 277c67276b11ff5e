"""Which backend can express which technique: the one table both backends and planner read.

``CAPABILITIES[type_tag][backend]`` is ``None`` when the backend expresses the technique,
else the reason it cannot. :func:`unsupported_reason` adds the per-config conditions
(tflite quantizes whole models only, the lite interpreter has no int4 embeddings).
Backends implement ``unsupported(plan)`` as ``unsupported_in_recipe(plan, self.name)``.
"""
from __future__ import annotations

from typing import Any, Iterable

from .base import TechniqueConfig

_NO_INT4_TS = "the TorchScript lite interpreter has no int4 kernels (torch.ao quantizes to int8 only)"
_NO_INT4_TFL = "onnx2tf/TFLite conversion offers no int4 weight quantization"
_PT2E_ONLY = ("eager-mode static quantization needs QuantStub/DeQuantStub and fused modules "
              "in the model source; use executorch (PT2E) or tflite")

_DENSE = {"torchscript": None, "executorch": None, "tflite": None, "eager": None}

CAPABILITIES: dict[str, dict[str, str | None]] = {
    "int8_dynamic": dict(_DENSE),
    "int8_static": {**_DENSE, "torchscript": _PT2E_ONLY},
    "int4_weight": {**_DENSE, "torchscript": _NO_INT4_TS, "tflite": _NO_INT4_TFL},
    "fp16": dict(_DENSE),
    "embedding_quant": {**_DENSE, "tflite": (
        "onnx2tf quantizes the whole model at once; use int8_dynamic (dynamic range), which "
        "also covers the embedding tables")},
    "magnitude_prune": dict(_DENSE),
    "head_prune": dict(_DENSE),
    "ffn_prune": dict(_DENSE),
    "channel_prune": dict(_DENSE),
    "low_rank": dict(_DENSE),
    "distill": dict(_DENSE),
}


def unsupported_reason(config: TechniqueConfig, backend: str) -> str | None:
    """Why ``backend`` cannot express ``config``, or None when it can."""
    table = CAPABILITIES.get(config.type_tag)
    if table is None:
        return f"unknown technique {config.type_tag!r}"
    if backend not in table:
        return f"unknown backend {backend!r}; expected one of {sorted(table)}"
    reason = table[backend]
    if reason:
        return reason
    if backend == "tflite" and getattr(config, "groups", ()):
        return ("tflite quantizes every layer during conversion; per-group choices "
                f"({','.join(config.groups)}) cannot be expressed")
    if backend == "torchscript" and config.type_tag == "embedding_quant" and config.bits == 4:
        return _NO_INT4_TS
    return None


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
    tflite_quant = [c for c in steps if c.type_tag in ("int8_dynamic", "int8_static", "fp16")]
    for config in steps:
        reason = unsupported_reason(config, backend)
        if reason:
            out.append(f"{config.label()} on {backend}: {reason}")
    if backend == "tflite" and len(tflite_quant) > 1:
        out.append("tflite: only one whole-model quantization per conversion, found "
                   + ", ".join(c.label() for c in tflite_quant))
    return out
