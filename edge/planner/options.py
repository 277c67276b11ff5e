"""The options the search combines, each with its measured accuracy (or why it was rejected).

- per-group precisions (executorch, torchscript): fp32 / int8 / int4 g32|g64|g128 for Linear
  groups, fp32 / int8 / int4 g32 for embedding tables; convolutions stay fp32 here;
- whole-model precisions: fp16 (every backend), int8 dynamic range (tflite), int8 static
  (convolutional models on executorch and tflite);
- structures: none, head/FFN/channel pruning, low-rank factorization, distillation (opt-in);
- language models: the KV cache's element type (fp32, fp16, q8_0: what the backend can hold).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from ..compress import (ChannelPruneConfig, DistillConfig, EmbeddingQuantConfig, FfnPruneConfig,
                        Fp16Config, HeadPruneConfig, Int4WeightConfig, Int8DynamicConfig,
                        Int8StaticConfig, KvCacheConfig, LowRankConfig, TechniqueConfig, unsupported_reason)
from ..compress.kv_cache import KV_CACHE_DTYPES
from ..backends import get_backend
from ..errors import ConfigError, UnsupportedError
from .sensitivity import compress_and_score, measure
from .stats import ModelStats, count_stats

if TYPE_CHECKING:  # annotations only
    from ..models.base import ModelSpec
    from ..profiles import DeviceProfile
    from .plan import Constraints

LINEAR_GROUPS = ("attention", "ffn", "head", "linear")
LINEAR_PRECISIONS = ("int8", "int4_g32", "int4_g64", "int4_g128")
EMBEDDING_PRECISIONS = ("int8", "int4_g32")
STRUCTURES: tuple[TechniqueConfig, ...] = (
    HeadPruneConfig(fraction=0.25), FfnPruneConfig(fraction=0.25), ChannelPruneConfig(fraction=0.25),
    LowRankConfig(energy=0.95),
)


@dataclass
class Option:
    """A precision choice for one group (or the whole model) and its measured accuracy."""

    precision: str
    accuracy: float = 1.0
    recipe: list[TechniqueConfig] = field(default_factory=list)
    # what the host runs to measure it (tflite's conversion-time quantization is emulated)
    emulation: list[TechniqueConfig] = field(default_factory=list)

    @property
    def loss(self) -> float:
        return max(0.0, 1.0 - self.accuracy)


@dataclass
class Structure:
    """A structural change (or none) applied before quantization, with the stats it leaves."""

    label: str
    config: TechniqueConfig | None
    stats: ModelStats
    accuracy: float = 1.0

    @property
    def loss(self) -> float:
        return max(0.0, 1.0 - self.accuracy)


def group_config(group: str, precision: str) -> TechniqueConfig:
    """The technique config that puts ``group`` at ``precision``."""
    size = int(precision.split("_g")[1]) if precision.startswith("int4_g") else 32
    if group == "embedding":
        return EmbeddingQuantConfig(bits=8 if precision == "int8" else 4, group_size=size)
    if precision == "int8":
        return Int8DynamicConfig(groups=(group,))
    return Int4WeightConfig(group_size=size, groups=(group,))


def _check(spec, recipe, backend, samples, min_accuracy, what, reasons) -> float | None:
    accuracy = measure(spec, recipe, backend, samples)
    if accuracy < min_accuracy:
        reasons.append(f"{what} rejected: measured accuracy {accuracy:.4f} < {min_accuracy:g}")
        return None
    return accuracy


def group_options(spec: ModelSpec, stats: ModelStats, backend: str, min_accuracy: float,
                  reasons: list[str], samples: int) -> dict[str, list[Option]]:
    """Per layer group: fp32 plus every precision the backend expresses that keeps accuracy."""
    out: dict[str, list[Option]] = {}
    unsupported: dict[str, list[str]] = {}
    for group, g in stats.groups.items():
        out[group] = [Option("fp32")]
        if group not in LINEAR_GROUPS + ("embedding",):
            continue
        for precision in EMBEDDING_PRECISIONS if group == "embedding" else LINEAR_PRECISIONS:
            config = group_config(group, precision)
            what = f"{precision} on {group} ({backend})"
            reason = unsupported_reason(config, backend)
            if reason:
                unsupported.setdefault(reason, []).append(f"{precision} on {group}")
                continue
            if group != "embedding" and precision.startswith("int4") \
                    and g.min_in_features % config.group_size:
                reasons.append(f"{what} rejected: input width {g.min_in_features} is not a multiple "
                               f"of the group size {config.group_size}")
                continue
            accuracy = _check(spec, [config], backend, samples, min_accuracy, what, reasons)
            if accuracy is not None:
                out[group].append(Option(precision, accuracy, [config]))
    reasons += [f"{', '.join(whats)} ({backend}) rejected: {reason}" for reason, whats in unsupported.items()]
    return out


def whole_model_options(spec: ModelSpec, stats: ModelStats, backend: str, min_accuracy: float,
                        reasons: list[str], samples: int) -> list[Option]:
    """Options that set one precision for every group at once (fp16, tflite int8, int8 static)."""
    candidates: list[tuple[str, list[TechniqueConfig], list[TechniqueConfig]]] = [
        ("fp16", [Fp16Config()], [Fp16Config()])]
    if get_backend(backend).whole_model_quantization:  # int8 at conversion covers embeddings too
        emulation = [Int8DynamicConfig()] + ([EmbeddingQuantConfig(bits=8)] if "embedding" in stats.groups else [])
        candidates.append(("int8", [Int8DynamicConfig()], emulation))
    if "conv" in stats.groups:
        candidates.append(("int8_static", [Int8StaticConfig()], [Int8StaticConfig()]))
    out = []
    for precision, recipe, emulation in candidates:
        what = f"{precision} whole model ({backend})"
        reason = unsupported_reason(recipe[0], backend)
        if reason:
            reasons.append(f"{what} rejected: {reason}")
            continue
        accuracy = _check(spec, emulation, backend, samples, min_accuracy, what, reasons)
        if accuracy is not None:
            out.append(Option(precision, accuracy, recipe, emulation))
    return out


def structures(spec: ModelSpec, base: ModelStats, min_accuracy: float, reasons: list[str],
               samples: int, distill: bool) -> list[Structure]:
    """'none' plus every structural change that applies to the model and keeps accuracy."""
    out = [Structure("none", None, base)]
    reasons.append("magnitude pruning not considered: zeroed weights keep their shapes, so dense "
                   "runtimes (XNNPACK, lite interpreter, TFLite) gain no size or latency from it")
    configs = list(STRUCTURES)
    if distill:
        configs.append(DistillConfig())
    else:
        reasons.append("distillation not tried: it trains a student for up to 30 s (enable it to include it)")
    for config in configs:
        try:
            accuracy, model = compress_and_score(spec, [config], "eager", samples)
        except (UnsupportedError, ConfigError) as exc:
            reasons.append(f"{config.label()} not applicable: {exc}")
            continue
        if accuracy < min_accuracy:
            reasons.append(f"{config.label()} rejected: measured accuracy {accuracy:.4f} < {min_accuracy:g}")
            continue
        stats = count_stats(model, spec.example_inputs)
        if stats.total_params >= base.total_params:
            reasons.append(f"{config.label()} rejected: removes no parameters from this model")
            continue
        out.append(Structure(config.label(), config, stats, accuracy))
    return out


def kv_cache_options(spec: ModelSpec, backend: str, min_accuracy: float, reasons: list[str],
                     samples: int) -> list[Option]:
    """A language model's KV cache types on ``backend``, each with its accuracy measured alone.

    A type below the accuracy floor is kept (and said so): its candidates are infeasible on
    accuracy, yet the nothing-fits explanation can still say that it would hold the context.
    The backend's default type needs no recipe step; every type but fp32 (exact) is measured,
    and re-measured within each verified combination, with the host's keys and values rounded.
    """
    be = get_backend(backend)
    out, unsupported = [], {}
    for dtype in KV_CACHE_DTYPES:
        config = KvCacheConfig(dtype)
        what = f"kv cache {dtype} ({backend})"
        reason = unsupported_reason(config, backend) or be.kv_cache_problem(dtype, spec.generation.config)
        if reason:
            unsupported.setdefault(reason, []).append(dtype)
            continue
        accuracy = 1.0 if dtype == "fp32" else measure(spec, [config], backend, samples)
        if accuracy < min_accuracy:
            reasons.append(f"{what}: measured accuracy {accuracy:.4f} alone < {min_accuracy:g}; every "
                           "combination with it breaks the accuracy floor")
        recipe = [] if dtype == be.kv_cache_dtypes[0] else [config]
        out.append(Option(dtype, accuracy, recipe, [] if dtype == "fp32" else [config]))
    reasons += [f"kv cache {', '.join(d)} ({backend}) rejected: {r}" for r, d in unsupported.items()]
    default = be.kv_cache_dtypes[0]
    return sorted(out, key=lambda o: o.precision != default)  # the default first


def kv_cache_reasons(chosen: Any, candidates: Sequence[Any], constraints: Constraints,
                     profile: DeviceProfile) -> list[str]:
    """Why the chosen plan's KV cache type: its figures, then each other type with the same recipe."""
    from .verdict import violations

    kv, gen = chosen.kv, chosen.prediction.generation or {}
    exact = "exact" if kv.precision == "fp32" else f"measured accuracy {kv.accuracy:.4f} alone"
    lines = [f"kv cache: {kv.precision} taken: {gen.get('kv_cache_mb', 0):.1f} MB at context "
             f"{gen.get('context')}, {gen.get('kv_bytes_per_element', 0):g} bytes a value, {exact}"]
    for alt in candidates:
        if alt.kv is None or alt.kv.precision == kv.precision or (alt.backend, alt.structure.label, alt.groups) != (
                chosen.backend, chosen.structure.label, chosen.groups):
            continue
        what, pred = f"kv cache {alt.kv.precision}", alt.prediction
        broken = violations(pred, constraints, profile)
        if "memory" in broken:
            lines.append(f"{what} rejected with this recipe: peak memory {pred.peak_memory_mb:.1f} MB over the "
                         f"{profile.memory.model_budget_mb:g} MB budget at context {gen.get('context')}")
        elif broken:
            lines.append(f"{what} rejected with this recipe: breaks {', '.join(broken)} (accuracy "
                         f"{'measured' if alt.verified else 'estimated'} {pred.accuracy or 0:.4f})")
        else:
            lines.append(f"{what} not taken: predicted {pred.latency_ms:.2f} ms per token, peak memory "
                         f"{pred.peak_memory_mb:.1f} MB, accuracy {pred.accuracy or 0:.4f} (chosen: "
                         f"{chosen.prediction.latency_ms:.2f} ms, {chosen.prediction.peak_memory_mb:.1f} MB)")
    if len(lines) == 1:
        lines[0] += f" (the only type {chosen.backend} offers for this model)"
    return lines
