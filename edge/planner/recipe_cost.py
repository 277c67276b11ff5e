"""Predictions for a given recipe (not a searched one): what the cost model says about a plan
someone wrote by hand, or about a plan's alternatives, on any profile."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ..backends import get_backend
from ..compress import CompressContext, TechniqueConfig, apply
from .cost import Prediction, predict
from .stats import ModelStats, count_stats

if TYPE_CHECKING:  # annotations only
    from ..models.base import ModelSpec
    from ..profiles import DeviceProfile

_LINEAR = ("attention", "ffn", "head", "linear")


def assignment_of(recipe: Sequence[TechniqueConfig], stats: ModelStats, backend: str) -> dict[str, str]:
    """Layer group -> precision key of :data:`edge.planner.cost.PRECISIONS` that ``recipe`` leaves."""
    out: dict[str, str] = {}
    present = list(stats.groups)
    for c in recipe:
        tag, groups = c.type_tag, tuple(getattr(c, "groups", ()))
        if tag == "fp16" or (tag == "int8_static"):
            out.update({g: tag for g in present})
        elif tag == "int8_dynamic" and get_backend(backend).whole_model_quantization:
            out.update({g: "int8" for g in present})  # dynamic range at conversion: every weight tensor
        elif tag in ("int8_dynamic", "int4_weight"):
            precision = "int8" if tag == "int8_dynamic" else f"int4_g{c.group_size}"
            if tag == "int4_weight" and not groups:
                precision = get_backend(backend).ungrouped_int4_precision or precision
            covered = groups or (_LINEAR + ("embedding",) if get_backend(backend).ungrouped_quant_covers_embedding
                                 else _LINEAR)
            out.update({g: precision for g in present if g in covered})
            head = get_backend(backend).ungrouped_int4_head
            if tag == "int4_weight" and not groups and head and "head" in present:
                out["head"] = head  # the file type's own rule for the output tensor
                if "embedding" in present and stats.groups["head"].shared_params:
                    out["embedding"] = head  # tied: one tensor
        elif tag == "embedding_quant" and "embedding" in present:
            out["embedding"] = "int8" if c.bits == 8 else f"int4_g{c.group_size}"
    tied = "head" in present and "embedding" in present and stats.groups["head"].shared_params
    if tied and get_backend(backend).traits.tied_weights_stored_once:  # one tensor: the embedding's type
        if "embedding" in out:
            out["head"] = out["embedding"]
        elif "head" in out:
            out["embedding"] = out["head"]
    return out


def predict_recipe(spec: ModelSpec, recipe: Sequence[TechniqueConfig], backend: str, profile: DeviceProfile) -> Prediction:
    """Size, memory and latency of ``spec`` compressed by ``recipe`` for ``backend`` on ``profile``.

    Structural steps are applied to a fresh copy first (their effect on the counts is real);
    accuracy is left None (see :mod:`edge.planner.sensitivity`).
    """
    structural = [c for c in recipe if c.structural]
    model = spec.fresh_model()
    ctx = CompressContext("eager", spec)
    for config in structural:
        model = apply(model, config, ctx)
    stats = count_stats(model.eval(), spec.example_inputs)
    return predict(stats, assignment_of(recipe, stats, backend), backend, profile)
