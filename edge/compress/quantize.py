"""Quantization techniques, expressed per backend.

- ``executorch`` / ``eager``: torchao source transforms (``quantize_``) that XNNPACK lowers;
  static int8 uses the PT2E ``XNNPACKQuantizer`` calibrated on ``spec.calib_inputs``.
- ``torchscript``: ``torch.ao.quantization.quantize_dynamic`` (per-channel int8 Linear,
  float-qparams int8 embeddings) and an fp16 wrapper; the lite interpreter runs both.
- ``tflite``: onnx2tf quantizes during conversion, so ``apply`` leaves the eager model
  alone and sets ``ctx.options["tflite_quantization"]``.

Which backend can express which config is decided in :mod:`edge.compress.capabilities`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError, UnsupportedError
from .base import CompressContext, TechniqueConfig
from .groups import selects

log = logging.getLogger(__name__)

GROUP_SIZES = (32, 64, 128)


@dataclass(frozen=True)
class Int8DynamicConfig(TechniqueConfig):
    """int8 per-channel weights, activations quantized dynamically at run time (Linear layers)."""

    type_tag = "int8_dynamic"
    groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._groups()

    def label(self) -> str:
        return "int8" + (f" [{','.join(self.groups)}]" if self.groups else "")


@dataclass(frozen=True)
class Int8StaticConfig(TechniqueConfig):
    """int8 weights and activations, activation ranges calibrated on ``spec.calib_inputs``."""

    type_tag = "int8_static"
    calib_samples: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.calib_samples, int) or self.calib_samples < 1:
            raise ConfigError(f"int8_static: expected calib_samples >= 1, found {self.calib_samples!r}")

    def label(self) -> str:
        return "int8 static"


@dataclass(frozen=True)
class Int4WeightConfig(TechniqueConfig):
    """int4 group-wise weights (group of ``group_size`` input features share a scale), int8 activations."""

    type_tag = "int4_weight"
    group_size: int = 32
    groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._choice("group_size", GROUP_SIZES)
        self._groups()

    def label(self) -> str:
        return f"int4 g{self.group_size}" + (f" [{','.join(self.groups)}]" if self.groups else "")


@dataclass(frozen=True)
class Fp16Config(TechniqueConfig):
    """fp16 weights and compute (inputs and outputs stay fp32 at the model boundary)."""

    type_tag = "fp16"

    def label(self) -> str:
        return "fp16"


@dataclass(frozen=True)
class EmbeddingQuantConfig(TechniqueConfig):
    """Quantized embedding tables: int8 per row, or int4 group-wise."""

    type_tag = "embedding_quant"
    bits: int = 8
    group_size: int = 32

    def __post_init__(self) -> None:
        self._choice("bits", (8, 4))
        self._choice("group_size", GROUP_SIZES)

    def label(self) -> str:
        return "int8 emb" if self.bits == 8 else f"int4 g{self.group_size} emb"


def _linear_filter(groups: tuple[str, ...], group_size: int | None = None):
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


def _tflite_option(ctx: CompressContext, value: str) -> None:
    previous = ctx.options.get("tflite_quantization")
    if previous not in (None, value):
        raise UnsupportedError(
            f"tflite quantizes the whole model once during conversion; the plan asks for both "
            f"{previous!r} and {value!r}. Keep one quantization step for tflite."
        )
    ctx.options["tflite_quantization"] = value


def apply_int8_dynamic(model: nn.Module, config: Int8DynamicConfig, ctx: CompressContext) -> nn.Module:
    """Quantize Linear weights to int8 per output channel, activations dynamically."""
    if ctx.backend == "tflite":
        _tflite_option(ctx, "dynamic_range")
        return model
    if ctx.backend == "torchscript":
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        names = {n: per_channel_dynamic_qconfig for n, m in model.named_modules()
                 if isinstance(m, nn.Linear) and selects(config.groups, n, m)}
        return quantize_dynamic(model, qconfig_spec=names, dtype=torch.qint8, inplace=False)
    from torchao.quantization.granularity import PerAxis

    return _torchao_linear(model, torch.int8, PerAxis(0), _linear_filter(config.groups))


def apply_int4_weight(model: nn.Module, config: Int4WeightConfig, ctx: CompressContext) -> nn.Module:
    """Quantize Linear weights to int4 with one scale per ``group_size`` inputs (torchao 8da4w)."""
    from torchao.quantization.granularity import PerGroup

    return _torchao_linear(model, torch.int4, PerGroup(config.group_size),
                           _linear_filter(config.groups, config.group_size))


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


def apply_fp16(model: nn.Module, config: Fp16Config, ctx: CompressContext) -> nn.Module:
    """Store weights (and compute) in fp16."""
    if ctx.backend == "tflite":
        _tflite_option(ctx, "float16")
        return model
    if getattr(model, "handles_half", False):  # keeps its own interface (e.g. the KV-cache decoder)
        return model.half()
    return HalfPrecision(model)


def apply_embedding_quant(model: nn.Module, config: EmbeddingQuantConfig,
                          ctx: CompressContext) -> nn.Module:
    """Quantize nn.Embedding tables (int8 per row or int4 group-wise)."""
    if ctx.backend == "torchscript":
        from torch.ao.quantization import float_qparams_weight_only_qconfig, quantize_dynamic

        return quantize_dynamic(model, qconfig_spec={nn.Embedding: float_qparams_weight_only_qconfig},
                                dtype=torch.quint8, inplace=False)
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


def apply_int8_static(model: nn.Module, config: Int8StaticConfig, ctx: CompressContext) -> nn.Module:
    """Calibrated int8 (weights and activations): PT2E XNNPACKQuantizer, or tflite full-integer."""
    if ctx.spec is None or not ctx.spec.calib_inputs:
        raise ConfigError("int8_static: expected a model spec with calib_inputs, found none")
    if ctx.backend == "tflite":
        _tflite_option(ctx, "integer")
        return model
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
