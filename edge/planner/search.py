"""The search: every backend x structure x per-group precision, under the constraints.

Accuracy of a combination is estimated additively from the measured single-option losses
(1 - accuracy), then the best candidates are re-measured as a whole before one is chosen.
Objective: lowest predicted latency, then smallest size, then highest accuracy.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..backends import BACKENDS, get_backend
from ..compress import (EmbeddingQuantConfig, Int4WeightConfig, Int8DynamicConfig, TechniqueConfig,
                        unsupported_reason)
from ..errors import NoFeasiblePlanError
from .cost import MB, Prediction, predict
from .llm_cost import predict_generation
from .options import (Option, Structure, group_config, group_options, kv_cache_options, kv_cache_reasons,
                      structures, whole_model_options)
from .plan import Constraints, Plan
from .sensitivity import DEFAULT_SAMPLES, calibration_basis, measure, unchanged_weights
from .stats import count_stats
from .verdict import budget_checks, explain_infeasible, pareto_front, summarize_rejections, violations

if TYPE_CHECKING:  # annotations only
    from ..models.base import ModelSpec
    from ..profiles import DeviceProfile

log = logging.getLogger(__name__)

MAX_VERIFICATIONS = 6


@dataclass
class Candidate:
    """One backend + structure + precision assignment, with its predictions."""

    backend: str
    structure: Structure
    groups: dict[str, str]
    recipe: list[TechniqueConfig]
    measure_recipe: list[TechniqueConfig]
    prediction: Prediction
    verified: bool = False
    kv: Option | None = None  # a language model's KV cache type


    def summary(self) -> dict:
        return {"backend": self.backend, "structure": self.structure.label,
                "groups": dict(self.groups), "recipe": [c.label() for c in self.recipe],
                "recipe_configs": [c.to_dict() for c in self.recipe],
                "predicted": self.prediction.to_dict(),
                **({"kv_cache": self.kv.precision} if self.kv else {}),
                "accuracy_basis": "measured" if self.verified else "estimated"}

    def describe(self) -> str:
        quant = ", ".join(f"{g}={p}" for g, p in self.groups.items() if p != "fp32") or "fp32"
        struct = "" if self.structure.config is None else f"{self.structure.label} + "
        kv = f", kv cache {self.kv.precision}" if self.kv and len(get_backend(self.backend).kv_cache_dtypes) > 1 else ""
        return f"{self.backend}: {struct}{quant}{kv}"


def merge_recipe(options: dict[str, Option]) -> list[TechniqueConfig]:
    """One config per precision: int4 groups, then int8 groups, then embeddings."""
    by_precision: dict[str, list[str]] = {}
    steps: list[TechniqueConfig] = []
    for group, option in options.items():
        if option.precision == "fp32":
            continue
        if group == "embedding":
            steps.extend(option.recipe)
        else:
            by_precision.setdefault(option.precision, []).append(group)
    linear = []
    for precision, groups in sorted(by_precision.items(), reverse=True):
        if precision == "int8":
            linear.append(Int8DynamicConfig(groups=tuple(groups)))
        else:
            linear.append(Int4WeightConfig(group_size=int(precision.split("_g")[1]), groups=tuple(groups)))
    embedding = [s for s in steps if isinstance(s, EmbeddingQuantConfig)]
    return linear + embedding


def _usable_backends(spec: ModelSpec, profile: DeviceProfile, requested: list[str] | None,
                     reasons: list[str]) -> list[str]:
    out = []
    for backend in BACKENDS:
        if requested is not None and backend not in requested:
            reasons.append(f"{backend} rejected: not in the requested backends ({', '.join(requested)})")
        elif backend not in profile.runtimes:
            reasons.append(f"{backend} rejected: not in profile {profile.name} runtimes "
                           f"({', '.join(profile.runtimes)})")
        elif spec.generation is None and get_backend(backend).language_models_only:
            reasons.append(f"{backend} rejected: it runs language models only, and {spec.name} is not one")
        else:
            out.append(backend)
    if not out:
        raise NoFeasiblePlanError(
            f"expected at least one backend that is requested, in profile {profile.name}'s runtimes "
            f"({', '.join(profile.runtimes)}) and able to run {spec.name}, found none; pick --backends from those")
    return out


def _candidates(spec, profile, backend, structs, constraints, reasons, samples) -> list[Candidate]:
    base = structs[0].stats
    out = []
    whole_only = get_backend(backend).whole_model_quantization
    per_group = {} if whole_only else group_options(
        spec, base, backend, constraints.min_accuracy, reasons, samples)
    if whole_only:
        reasons.append(f"{backend}: per-group precisions not expressible (it quantizes the whole "
                       "model during conversion); whole-model options only")
    whole = whole_model_options(spec, base, backend, constraints.min_accuracy, reasons, samples)
    kv_options: list[Option | None] = [None] if spec.generation is None else kv_cache_options(
        spec, backend, constraints.min_accuracy, reasons, samples)
    for struct in structs:
        reason = unsupported_reason(struct.config, backend) if struct.config is not None else None
        if reason:
            reasons.append(f"{backend}: {struct.label} rejected: {reason}")
            continue
        prefix = [struct.config] if struct.config is not None else []
        groups = list(struct.stats.groups)
        combos: list[tuple[dict[str, Option], Option | None]] = [
            (dict(zip(groups, c)), None)
            for c in itertools.product(*[per_group.get(g, [Option("fp32")]) for g in groups])
        ] if per_group else [({g: Option("fp32") for g in groups}, None)]
        combos += [({g: option for g in groups}, option) for option in whole]
        for combo, whole_option in combos:
            recipe = list(whole_option.recipe) if whole_option else merge_recipe(combo)
            measure_recipe = prefix + (list(whole_option.emulation) if whole_option else recipe)
            assignment = {g: o.precision for g, o in combo.items()}
            loss = struct.loss + (whole_option.loss if whole_option else sum(o.loss for o in combo.values()))
            for kv in kv_options:
                pred = predict(struct.stats, assignment, backend, profile)
                if kv is not None:
                    _with_generation(pred, spec, struct.stats, assignment, backend, profile, constraints, kv.precision)
                pred.accuracy = max(0.0, 1.0 - loss - (kv.loss if kv else 0.0))
                out.append(Candidate(backend, struct, assignment, prefix + recipe + (kv.recipe if kv else []),
                                     measure_recipe + (kv.emulation if kv else []), pred, kv=kv))
    return out


def _with_generation(pred, spec: ModelSpec, stats, assignment, backend: str, profile: DeviceProfile,
                     constraints: Constraints, kv_cache: str | None = None) -> None:
    """A language model's prediction: the KV cache (of type ``kv_cache``) in memory, one decode step as the latency."""
    cfg = spec.generation.config
    context = constraints.context or cfg.context
    gen = predict_generation(stats, assignment, backend, profile, cfg, int(spec.example_inputs[0].shape[1]),
                             context, pred.peak_memory_mb, kv_cache)
    pred.add_model_memory(gen.kv_cache_mb)  # the model's share and the peak alike
    pred.latency_ms = 1e3 / gen.decode_tok_s
    pred.generation = gen.to_dict()


def generation_reasons(spec: ModelSpec, plan_pred: dict, profile: DeviceProfile) -> list[str]:
    """The memory arithmetic of a language-model plan, as reasons a reader can check."""
    cfg, gen = spec.generation.config, plan_pred.get("generation") or {}
    if not gen:
        return []
    elem = gen.get("kv_bytes_per_element", 4)
    positions = gen.get("kv_positions", gen["context"])
    per_position = round(2 * cfg.layers * cfg.kv_heads * cfg.head_dim * elem)
    padded = f" (the runtime rounds {gen['context']} up)" if positions != gen["context"] else ""
    lines = [f"KV cache at context {gen['context']}: {cfg.layers} layers x 2 x {cfg.kv_heads} KV heads x "
             f"{cfg.head_dim} head dim x {positions} positions{padded} x {elem:g} bytes "
             f"({gen.get('kv_cache', 'fp32')}) = "
             f"{gen['kv_cache_mb']:.1f} MB; "
             f"weights, activations and runtime {plan_pred['peak_memory_mb'] - gen['kv_cache_mb']:.1f} MB"]
    budget = profile.memory.model_budget_mb
    if budget is not None and gen.get("max_context") is not None:
        lines.append(f"largest context that fits the {budget:g} MB budget: ({budget:g} - "
                     f"{plan_pred['peak_memory_mb'] - gen['kv_cache_mb']:.1f}) MB / {per_position} bytes per "
                     f"position = {gen['max_context']} tokens (memory alone; the model may be trained on fewer)")
    lines.append(f"predicted generation: time to first token {gen['ttft_ms']:.1f} ms, prefill "
                 f"{gen['prefill_tok_s']:.1f} tok/s, decode {gen['decode_tok_s']:.1f} tok/s "
                 f"({gen['decode_mb_per_token']:.1f} MB read per token"
                 + ("; each weight type at the decode rate the profile's decoder probes measured"
                    + (f", and {cfg.layers} layers x {gen['decode_layer_ms']:.3g} ms each beyond their bytes"
                       if gen.get("decode_layer_ms") else "") + ")"
                    if gen.get("basis") == "calibrated" else
                    "; a bandwidth roofline: `edge profiles calibrate --llm` on the device measures the rates)"))
    return lines


def _verify(spec, ordered: list[Candidate], constraints: Constraints, reasons: list[str],
            samples: int) -> Candidate | None:
    for cand in ordered[:MAX_VERIFICATIONS]:
        accuracy = measure(spec, cand.measure_recipe, cand.backend, samples)
        cand.prediction.accuracy, cand.verified = accuracy, True
        if accuracy >= constraints.min_accuracy:
            reasons.append(f"verified {cand.describe()}: measured accuracy {accuracy:.4f} on "
                           f"{calibration_basis(spec, samples)}")
            return cand
        reasons.append(f"{cand.describe()} rejected after re-measuring the combination: accuracy "
                       f"{accuracy:.4f} < {constraints.min_accuracy:g} (estimated additively higher)")
    return None


def make_plan(spec: ModelSpec, profile: DeviceProfile, constraints: Constraints | None = None,
              backends: list[str] | None = None, distill: bool = False,
              samples: int = DEFAULT_SAMPLES) -> Plan:
    """Choose backend and per-group recipe for ``spec`` on ``profile`` under ``constraints``.

    Raises NoFeasiblePlanError (with the best reachable figures and what would have to
    give) when no candidate satisfies every constraint.
    """
    constraints = constraints or Constraints()
    reasons: list[str] = []
    usable = _usable_backends(spec, profile, backends, reasons)
    base = count_stats(spec.model.eval(), spec.example_inputs)
    structs = structures(spec, base, constraints.min_accuracy, reasons, samples, distill)
    everything: list[Candidate] = []
    for backend in usable:
        everything += _candidates(spec, profile, backend, structs, constraints, reasons, samples)
    feasible = [c for c in everything if not violations(c.prediction, constraints, profile)]
    reasons += summarize_rejections(everything, constraints, profile)
    feasible.sort(key=lambda c: (round(c.prediction.latency_ms, 3), c.prediction.size_bytes,
                                 -(c.prediction.accuracy or 0.0)))
    chosen = _verify(spec, feasible, constraints, reasons, samples) if feasible else None
    if chosen is None:
        raise NoFeasiblePlanError(explain_infeasible(spec.name, everything, constraints, profile))
    taken = [f"chosen {chosen.describe()}: lowest predicted latency "
             f"{chosen.prediction.latency_ms:.2f} ms among {len(feasible)} feasible candidates "
             f"(size {chosen.prediction.size_bytes / MB:.2f} MB, peak memory "
             f"{chosen.prediction.peak_memory_mb:.1f} MB)"]
    if chosen.structure.config is not None:
        taken.append(f"{chosen.structure.label} taken: measured accuracy alone "
                     f"{chosen.structure.accuracy:.4f}")
    taken += [f"{group}: {precision} taken" for group, precision in chosen.groups.items()]
    taken += on_grid_reasons(spec, chosen, samples)
    if chosen.kv is not None:
        taken += kv_cache_reasons(chosen, everything, constraints, profile)
    taken += budget_checks(profile, chosen.prediction)
    if spec.generation is not None:
        taken += generation_reasons(spec, chosen.prediction.to_dict(), profile)
    reasons[:0] = taken
    return Plan(
        model=spec.name, profile=profile.name,
        constraints={"min_accuracy": constraints.min_accuracy, "max_latency_ms": constraints.max_latency_ms,
                     "max_size_mb": constraints.max_size_mb,
                     **({"context": constraints.context or spec.generation.config.context,
                         "min_decode_tok_s": constraints.min_decode_tok_s, "max_ttft_ms": constraints.max_ttft_ms}
                        if spec.generation is not None else {}),
                     "memory_budget_mb": profile.memory.model_budget_mb,
                     "storage_budget_mb": profile.storage.budget_mb},
        backend=chosen.backend, recipe=chosen.recipe, predicted=chosen.prediction.to_dict(),
        groups=chosen.groups, structure=chosen.structure.label if chosen.structure.config else None,
        accuracy_basis=f"{spec.metric} vs fp32 on {calibration_basis(spec, samples)}, host "
                       f"{_flavour_label(chosen.backend)} eager model",
        pareto=[c.summary() for c in pareto_front(feasible)],
        reasons=reasons, notes=sorted(set(chosen.prediction.notes)),
    )


def on_grid_reasons(spec: ModelSpec, chosen, samples: int) -> list[str]:
    """A reason for the chosen precisions that left their group's weights exactly as they were."""
    same = [f"{group}: {precision}" for group, precision in chosen.groups.items()
            if (precision == "int8" or precision.startswith("int4_g"))
            and unchanged_weights(spec, [group_config(group, precision)], chosen.backend, samples)]
    if not same:
        return []
    return [f"{', '.join(same)} ({chosen.backend}) left the weights exactly as they were: this model was "
            "already quantized that way (e.g. dequantized from a GGUF file), so its measured accuracy is "
            "free here and says nothing about the model before that quantization, which may lose more"]


def _flavour_label(backend: str) -> str:
    """The quantization library whose host model the plan's accuracy was measured on."""
    return get_backend(backend).host_quantizer
