"""The element type a language model's KV cache is stored in (fp32, fp16, q8_0).

The cache is not a weight: it is filled while the model generates, so a smaller element type
costs accuracy through the keys and values every later token reads back. What the runtime
does with the choice is the backend's business (:meth:`~edge.backends.base.Backend.lower`):
llama.cpp sets its context's ``type_k``/``type_v``; backends whose cache lives in the exported
graph accept only the type that graph holds (``Backend.kv_cache_dtypes``).

On the host the choice is measured by rounding what each attention layer hands to the cache
(:mod:`edge.backends.kv_rounding`): the eager ``forward`` then computes with the keys and values
a cache of that type returns. ``q8_0`` is GGML's block format (one fp16 scale per 32 values, 34
bytes per 32 elements); the llamacpp flavour rounds it as llama.cpp lays the cache out.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import UnsupportedError
from .base import CompressContext, TechniqueConfig

KV_CACHE_DTYPES = ("fp32", "fp16", "q8_0")
# bytes one cached element takes; q8_0: 32 int8 values and one fp16 scale per block of 32
KV_BYTES_PER_ELEMENT = {"fp32": 4.0, "fp16": 2.0, "q8_0": 34 / 32}


@dataclass(frozen=True)
class KvCacheConfig(TechniqueConfig):
    """Store a language model's KV cache as ``dtype`` (``fp32``, ``fp16`` or ``q8_0``)."""

    type_tag = "kv_cache"
    dtype: str = "fp32"

    def __post_init__(self) -> None:
        self._choice("dtype", KV_CACHE_DTYPES)

    def label(self) -> str:
        return f"kv cache {self.dtype}"


def apply_kv_cache(model: nn.Module, config: KvCacheConfig, ctx: CompressContext) -> nn.Module:
    """Hand the cache type to the backend (or host flavour) named by ``ctx.backend``."""
    from ..backends.kv_rounding import attention_layers
    from ..backends.lowering import lowering_for

    if not attention_layers(model) or (ctx.spec is not None and ctx.spec.generation is None):
        raise UnsupportedError(f"{config.label()}: a KV cache belongs to a language model (edge's Llama "
                               f"decoders), found {type(model).__name__}")
    return lowering_for(ctx.backend)(model, config, ctx)
