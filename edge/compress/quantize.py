"""Quantization techniques: what each one means (the configs); the backends say how.

Each ``apply_*`` hands its config to the backend named by ``ctx.backend`` (its
:meth:`~edge.backends.base.Backend.lower`), or to the host's ``eager`` flavour (torchao, the
lowering ExecuTorch executes; :mod:`edge.backends.lowering`). Which backend can express which
config is decided by the backends themselves (:mod:`edge.compress.capabilities` reads them).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError
from .base import CompressContext, TechniqueConfig

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


def _lower(model: nn.Module, config: TechniqueConfig, ctx: CompressContext) -> nn.Module:
    """The backend (or host flavour) named by ``ctx.backend`` says how ``config`` becomes code."""
    from ..backends.lowering import lowering_for

    return lowering_for(ctx.backend)(model, config, ctx)


def apply_int8_dynamic(model: nn.Module, config: Int8DynamicConfig, ctx: CompressContext) -> nn.Module:
    """Quantize Linear weights to int8 per output channel, activations dynamically."""
    return _lower(model, config, ctx)


def apply_int4_weight(model: nn.Module, config: Int4WeightConfig, ctx: CompressContext) -> nn.Module:
    """Quantize Linear weights to int4 with one scale per ``group_size`` inputs (torchao 8da4w)."""
    return _lower(model, config, ctx)


def apply_fp16(model: nn.Module, config: Fp16Config, ctx: CompressContext) -> nn.Module:
    """Store weights (and compute) in fp16."""
    return _lower(model, config, ctx)


def apply_embedding_quant(model: nn.Module, config: EmbeddingQuantConfig,
                          ctx: CompressContext) -> nn.Module:
    """Quantize nn.Embedding tables (int8 per row or int4 group-wise)."""
    return _lower(model, config, ctx)


def apply_int8_static(model: nn.Module, config: Int8StaticConfig, ctx: CompressContext) -> nn.Module:
    """Calibrated int8 (weights and activations) on the backend's static quantizer."""
    if ctx.spec is None or not ctx.spec.calib_inputs:
        raise ConfigError("int8_static: expected a model spec with calib_inputs, found none")
    return _lower(model, config, ctx)
