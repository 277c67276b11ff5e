"""How quantization techniques become code on the host: the torchao / PT2E eager lowering.

The technique configs (:mod:`edge.compress.quantize`) say *what* (int8 per channel, int4
group 32, ...); a backend's :meth:`~edge.backends.base.Backend.lower` says *how*. This module
is the lowering ExecuTorch executes (torchao source transforms that XNNPACK lowers, PT2E's
``XNNPACKQuantizer`` for static int8) and the host's ``eager`` flavour the planner measures
with; other backends override ``lower`` in their own file.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from torch import nn

from ..errors import ConfigError

log = logging.getLogger(__name__)

EAGER = "eager"  # the host flavour: torchao-quantized eager modules


def lowering_for(backend: str) -> Callable[[nn.Module, Any, Any], nn.Module]:
    """The lowering function of a registered backend, or of the host ``eager`` flavour."""
    if backend == EAGER:
        return lower_eager
    from . import get_backend

    return get_backend(backend).lower


def lower_eager(model: nn.Module, config: Any, ctx: Any) -> nn.Module:
    """torchao / PT2E lowering of one quantization config (the ExecuTorch and host-eager way)."""
    lower = _EAGER.get(config.type_tag)
    if lower is None:
        raise ConfigError(f"expected a quantization technique in {sorted(_EAGER)}, found {config.type_tag!r}")
    return lower(model, config, ctx)


def linear_filter(groups: tuple[str, ...], group_size: int | None = None):
    """torchao filter: Linear modules of ``groups`` (int4: whose in_features the group size divides)."""
    from ..compress.groups import selects

    def keep(module: nn.Module, fqn: str) -> bool:
        if not isinstance(module, nn.Linear) or not selects(groups, fqn, module):
            return False
        if group_size is not None and module.in_features % group_size:
            log.info("int4 g%d: leaving %s fp32 (in_features %d not divisible)", group_size, fqn,
                     module.in_features)
            return False
        return True
    return keep


def _torchao_linear(model: nn.Module, weight_dtype: torch.dtype, granularity, filter_fn) -> nn.Module:
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_

    quantize_(model, Int8DynamicActivationIntxWeightConfig(
        weight_dtype=weight_dtype, weight_granularity=granularity), filter_fn=filter_fn)
    return model


def _int8_dynamic(model: nn.Module, config: Any, ctx: Any) -> nn.Module:
    from torchao.quantization.granularity import PerAxis

    return _torchao_linear(model, torch.int8, PerAxis(0), linear_filter(config.groups))


def _int4_weight(model: nn.Module, config: Any, ctx: Any) -> nn.Module:
    from torchao.quantization.granularity import PerGroup

    return _torchao_linear(model, torch.int4, PerGroup(config.group_size),
                           linear_filter(config.groups, config.group_size))


class HalfPrecision(nn.Module):
    """Runs ``inner`` in fp16; floating inputs are cast in, floating outputs cast back to fp32."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner.half()

    def forward(self, *inputs: torch.Tensor):
        args = [x.half() if x.is_floating_point() else x for x in inputs]
        out = self.inner(*args)
        if isinstance(out, (tuple, list)):
            return type(out)(o.float() for o in out)
        return out.float()


def half_precision(model: nn.Module, config: Any = None, ctx: Any = None) -> nn.Module:
    """Weights and compute in fp16 (a model that ``handles_half`` converts in place)."""
    if getattr(model, "handles_half", False):  # keeps its own interface (e.g. the KV-cache decoder)
        return model.half()
    return HalfPrecision(model)


def _embedding_quant(model: nn.Module, config: Any, ctx: Any) -> nn.Module:
    from torchao.quantization import IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    for module in model.modules():
        if isinstance(module, nn.Embedding):
            # padding_idx only affects gradients; ExecuTorch's embedding fusion pattern rejects it.
            module.padding_idx = None
    if config.bits == 8:
        cfg = IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))
    else:
        cfg = IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(config.group_size))
    quantize_(model, cfg, filter_fn=lambda m, fqn: isinstance(m, nn.Embedding))
    ctx.options["executorch_quant_fusion"] = True
    return model


def _int8_static(model: nn.Module, config: Any, ctx: Any) -> nn.Module:
    """PT2E with XNNPACK's quantizer, calibrated on ``ctx.spec.calib_inputs``."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    example = tuple(ctx.spec.example_inputs)
    graph = torch.export.export(model.eval(), example).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for inputs in ctx.spec.calib_inputs[: config.calib_samples]:
            prepared(*inputs)
    # Backends call .eval() on what they export; make that a no-op-safe call on the graph.
    converted = convert_pt2e(prepared)
    allow_exported_model_train_eval(converted)
    _eval = converted.eval

    def eval_returning_self(*args):  # nn.Module.eval() returns the module; callers chain on it
        _eval(*args)
        return converted

    converted.eval = eval_returning_self
    return converted


def _kv_cache(model: nn.Module, config: Any, ctx: Any) -> nn.Module:
    """Keys and values rounded to the cache type on their way into attention (plain layout)."""
    from .kv_rounding import round_plain

    return round_plain(model, config.dtype)


_EAGER: dict[str, Callable[[nn.Module, Any, Any], nn.Module]] = {
    "int8_dynamic": _int8_dynamic, "int4_weight": _int4_weight, "int8_static": _int8_static,
    "fp16": half_precision, "embedding_quant": _embedding_quant, "kv_cache": _kv_cache,
}
