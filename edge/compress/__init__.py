"""Compression techniques: one file per technique, registered here by config type.

``apply(model, config, ctx)`` runs one technique; :func:`apply_plan` runs a plan's recipe
in order for one backend and returns the compressed model plus the export options the
backend must honour:

- ``tflite_quantization``: ``"dynamic_range" | "integer" | "float16"`` (the onnx2tf output to
  keep; ``integer`` is calibrated by the backend on ``spec.calib_inputs``).
- ``executorch_quant_fusion``: True when quantized embeddings need
  ``ExecutorchBackendConfig(do_quant_fusion_and_const_prop=True)`` and
  ``import executorch.kernels.quantized`` before ``to_executorch()``.
- ``llamacpp_kv_cache``: the KV cache type llama.cpp creates its context with (``fp16``, its
  default, ``q8_0`` or ``fp32``).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from torch import nn

from ..errors import UnsupportedError
from .base import CompressContext, TechniqueConfig, config_from_dict
from .capabilities import recipe_of, unsupported_in_recipe, unsupported_reason
from .distill import DistillConfig
from .kv_cache import KvCacheConfig
from .lowrank import LowRankConfig
from .prune import MagnitudePruneConfig
from .prune_structured import ChannelPruneConfig, FfnPruneConfig, HeadPruneConfig
from .quantize import (EmbeddingQuantConfig, Fp16Config, Int4WeightConfig, Int8DynamicConfig,
                       Int8StaticConfig)

if TYPE_CHECKING:  # annotations only
    from ..models.base import ModelSpec

# config type -> "module:function" (imported on first use; torchao/executorch load lazily)
TECHNIQUES: dict[type, str] = {
    Int8DynamicConfig: "edge.compress.quantize:apply_int8_dynamic",
    Int8StaticConfig: "edge.compress.quantize:apply_int8_static",
    Int4WeightConfig: "edge.compress.quantize:apply_int4_weight",
    Fp16Config: "edge.compress.quantize:apply_fp16",
    EmbeddingQuantConfig: "edge.compress.quantize:apply_embedding_quant",
    MagnitudePruneConfig: "edge.compress.prune:apply_magnitude_prune",
    HeadPruneConfig: "edge.compress.prune_structured:apply_head_prune",
    FfnPruneConfig: "edge.compress.prune_structured:apply_ffn_prune",
    ChannelPruneConfig: "edge.compress.prune_structured:apply_channel_prune",
    LowRankConfig: "edge.compress.lowrank:apply_low_rank",
    DistillConfig: "edge.compress.distill:apply_distill",
    KvCacheConfig: "edge.compress.kv_cache:apply_kv_cache",
}


def structural_tags() -> frozenset[str]:
    """Type tags of the techniques that change what the model computes (``structural`` configs)."""
    return frozenset(cls.type_tag for cls in TECHNIQUES if cls.structural)


def apply(model: nn.Module, config: TechniqueConfig, ctx: CompressContext) -> nn.Module:
    """Apply one technique for ``ctx.backend``; raises UnsupportedError where it cannot be expressed."""
    reason = unsupported_reason(config, ctx.backend)
    if reason:
        raise UnsupportedError(f"{config.label()} on {ctx.backend}: {reason}")
    module_name, _, attr = TECHNIQUES[type(config)].partition(":")
    return getattr(importlib.import_module(module_name), attr)(model, config, ctx)


def apply_plan(model: nn.Module, plan: Any, backend_name: str, spec: ModelSpec = None) -> tuple[nn.Module, dict]:
    """Apply a plan's recipe in order for ``backend_name``: returns (compressed model, export options).

    ``plan`` is a :class:`edge.planner.Plan`, a plan dict, a list of configs, or None (no-op).
    """
    problems = unsupported_in_recipe(plan, backend_name)
    if problems:
        raise UnsupportedError("the plan cannot be exported as planned: " + "; ".join(problems))
    ctx = CompressContext(backend=backend_name, spec=spec)
    for config in recipe_of(plan):
        model = apply(model, config, ctx)
    return model.eval(), ctx.options


__all__ = [
    "TECHNIQUES", "TechniqueConfig", "structural_tags", "CompressContext", "apply", "apply_plan", "config_from_dict",
    "unsupported_in_recipe", "unsupported_reason", "recipe_of",
    "Int8DynamicConfig", "Int8StaticConfig", "Int4WeightConfig", "Fp16Config", "EmbeddingQuantConfig",
    "MagnitudePruneConfig", "HeadPruneConfig", "FfnPruneConfig", "ChannelPruneConfig",
    "LowRankConfig", "DistillConfig", "KvCacheConfig",
]
