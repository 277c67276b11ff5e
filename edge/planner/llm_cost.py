"""Language models: KV-cache memory, the largest context a budget holds, prefill and decode rooflines.

Pure arithmetic on the counted stats (:class:`~edge.planner.stats.ModelStats` of a P-token
forward), the precision assignment and the device's rates (:func:`~edge.planner.cost.device_rates`):

- KV cache = layers x 2 x KV heads x context x head dim x bytes per element, the element
  being the plan's cache type (fp32: 4, fp16: 2, q8_0: 34 / 32; the backend's default when the
  plan names none, e.g. llama.cpp's f16), the context rounded up as the runtime allocates it
  (llama.cpp: to a multiple of 256 positions).
- Decode, per token: every weight is read once (an embedding reads one row) and each layer's
  cache is read up to the current position, at the cache type's element size; the time is the
  larger of bytes / bandwidth and FLOPs / throughput (a roofline), plus the backend's fixed
  overhead per call.
- Prefill of P tokens: P x the per-token FLOPs / throughput, or the weights read once /
  bandwidth when that is larger; time to first token = prefill + one call's overhead.
- Memory = the weights and activations :func:`~edge.planner.cost.predict` counts, plus the
  KV cache at the context; the largest context that fits is what the budget leaves for the
  cache divided by the cache bytes per position.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..compress.kv_cache import KV_BYTES_PER_ELEMENT
from .cost import MB, PRECISIONS, _weight_bytes, device_rates
from .stats import ModelStats

if TYPE_CHECKING:  # annotations only
    from ..profiles import DeviceProfile


@dataclass(frozen=True)
class GenerationPrediction:
    """Predicted generation figures for one plan at one context length."""

    context: int
    kv_cache_mb: float
    max_context: int | None  # the largest context the memory budget holds; None: no budget known
    ttft_ms: float
    prefill_tok_s: float
    decode_tok_s: float
    decode_bytes_per_token: float
    kv_positions: int = 0  # the positions the runtime allocates for ``context`` (its rounding)
    kv_bytes_per_element: float = 4.0
    kv_cache: str = "fp32"  # the cache's element type

    def to_dict(self) -> dict:
        return {"context": self.context, "kv_positions": self.kv_positions or self.context,
                "kv_cache": self.kv_cache, "kv_bytes_per_element": self.kv_bytes_per_element,
                "kv_cache_mb": round(self.kv_cache_mb, 3), "max_context": self.max_context,
                "ttft_ms": round(self.ttft_ms, 3), "prefill_tok_s": round(self.prefill_tok_s, 2),
                "decode_tok_s": round(self.decode_tok_s, 2),
                "decode_mb_per_token": round(self.decode_bytes_per_token / MB, 3)}


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, context: int, bytes_per_element: float = 4.0) -> float:
    """Keys and values of every layer for ``context`` positions."""
    return 2.0 * layers * kv_heads * head_dim * context * bytes_per_element


def predict_generation(stats: ModelStats, assignment: dict[str, str], backend: str, profile: DeviceProfile,
                       config, prompt_tokens: int, context: int, weights_memory_mb: float,
                       kv_cache: str | None = None) -> GenerationPrediction:
    """Generation figures of a decoder (``config``: its LlamaConfig) on ``profile``.

    ``stats`` were counted on a ``prompt_tokens``-token forward; ``weights_memory_mb`` is the
    plan's memory without the KV cache (:func:`~edge.planner.cost.predict`'s peak memory);
    ``kv_cache`` is the cache's element type (None: the backend's default).
    """
    rates = device_rates(profile, backend)
    weight_bytes = _weight_bytes(stats, assignment, backend)
    read = sum(b for g, b in weight_bytes.items() if g != "embedding")
    if "embedding" in stats.groups:  # one row per token
        read += weight_bytes["embedding"] / max(config.vocab, 1)
    read += stats.other_params * 4
    flops_s = 0.0  # seconds of multiply work per token, at each group's precision
    for name, g in stats.groups.items():
        compute = PRECISIONS[assignment.get(name, "fp32")][2]
        if compute == "fp16" and not rates.has_fp16:
            compute = "fp32"
        flops_s += g.flops / prompt_tokens / (rates.gops_for(name, compute) * 1e9)
    flops_s += stats.other_flops / prompt_tokens / (rates.gops["fp32"] * 1e9)
    from ..backends import get_backend

    be = get_backend(backend)
    kv_cache = kv_cache or be.kv_cache_dtypes[0]
    elem = KV_BYTES_PER_ELEMENT[kv_cache]
    per_position = kv_cache_bytes(config.layers, config.kv_heads, config.head_dim, 1, elem)
    multiple = max(1, be.traits.kv_context_multiple)
    positions = -(-context // multiple) * multiple  # the cache the runtime allocates
    kv_read = per_position * (prompt_tokens + context) / 2  # the cache read grows; its mean over a generation
    decode_s = max((read + kv_read) / (rates.bandwidth_gbs * 1e9), flops_s) + rates.overhead_ms / 1e3
    prefill_s = max(prompt_tokens * flops_s, read / (rates.bandwidth_gbs * 1e9))
    ttft_ms = prefill_s * 1e3 + rates.overhead_ms
    kv_mb = per_position * positions / MB
    budget = profile.memory.model_budget_mb
    max_context = None
    if budget is not None:
        max_context = max(0, int((budget - weights_memory_mb) * MB // per_position) // multiple * multiple)
    return GenerationPrediction(context=context, kv_cache_mb=kv_mb, max_context=max_context, ttft_ms=ttft_ms,
                                prefill_tok_s=prompt_tokens / prefill_s, decode_tok_s=1.0 / decode_s,
                                decode_bytes_per_token=read + kv_read, kv_positions=positions,
                                kv_bytes_per_element=elem, kv_cache=kv_cache)
