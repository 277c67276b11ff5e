"""Judging candidates: constraint violations, rejection summaries, the Pareto front and the
explanation given when nothing fits."""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Sequence

from .cost import MB, Prediction
from .plan import Constraints

if TYPE_CHECKING:  # annotations only
    from ..profiles import DeviceProfile

KINDS = ("accuracy", "latency", "size", "storage", "memory", "decode", "ttft")
PARETO_MAX = 12


def _limits(constraints: Constraints, profile: DeviceProfile) -> dict[str, float | None]:
    return {"accuracy": constraints.min_accuracy, "latency": constraints.max_latency_ms,
            "size": constraints.max_size_mb, "storage": profile.storage.budget_mb,
            "memory": profile.memory.model_budget_mb, "decode": constraints.min_decode_tok_s,
            "ttft": constraints.max_ttft_ms}


_AT_LEAST = ("accuracy", "decode")  # limits that are minimums


def _value(pred: Prediction, kind: str) -> float:
    gen = pred.generation or {}
    return {"accuracy": pred.accuracy or 0.0, "latency": pred.latency_ms,
            "size": pred.size_bytes / MB, "storage": pred.size_bytes / MB,
            "memory": pred.peak_memory_mb, "decode": gen.get("decode_tok_s", 0.0),
            "ttft": gen.get("ttft_ms", float("inf"))}[kind]


def violations(pred: Prediction, constraints: Constraints, profile: DeviceProfile) -> list[str]:
    """Which constraints ``pred`` breaks (empty = feasible)."""
    out = []
    for kind, limit in _limits(constraints, profile).items():
        if limit is None:
            continue
        value = _value(pred, kind)
        if (value < limit) if kind in _AT_LEAST else (value > limit):
            out.append(kind)
    return out


_UNITS = {"accuracy": "", "latency": " ms", "size": " MB", "storage": " MB", "memory": " MB", "decode": " tok/s",
          "ttft": " ms"}
_WORDS = {"accuracy": "below min accuracy", "latency": "over max latency", "size": "over max size",
          "storage": "over the storage budget", "memory": "over the memory budget",
          "decode": "below min decode tok/s", "ttft": "over max time to first token"}


def summarize_rejections(candidates: Sequence[Any], constraints: Constraints, profile: DeviceProfile) -> list[str]:
    """One line per backend: how many combinations broke which constraint, and the best seen."""
    lines = []
    limits = _limits(constraints, profile)
    for backend in dict.fromkeys(c.backend for c in candidates):
        mine = [c for c in candidates if c.backend == backend]
        counts: Counter = Counter()
        best: dict[str, float] = {}
        for c in mine:
            for kind in violations(c.prediction, constraints, profile):
                counts[kind] += 1
                v = _value(c.prediction, kind)
                best[kind] = max(best.get(kind, v), v) if kind in _AT_LEAST else min(best.get(kind, v), v)
        if not counts:
            lines.append(f"{backend}: all {len(mine)} combinations meet every constraint")
            continue
        parts = [f"{counts[k]} {_WORDS[k]} {limits[k]:g}{_UNITS[k]} (best {best[k]:.4g}{_UNITS[k]})"
                 for k in KINDS if counts[k]]
        lines.append(f"{backend}: of {len(mine)} combinations, " + "; ".join(parts))
    return lines


# the device budgets a plan is checked against: (kind, profile field, what is compared, its value)
_BUDGETS = (("memory", "memory.model_budget_mb", "peak memory", lambda p: p.peak_memory_mb),
            ("storage", "storage.budget_mb", "artifact size", lambda p: p.size_bytes / MB))


def budget_checks(profile: DeviceProfile, pred: Prediction | None = None) -> list[str]:
    """One line per device budget: what ``pred`` was checked against, or, where the profile
    gives no budget (null), that it was not checked and why, so a plan never looks checked
    when it was not."""
    limits = {"memory": profile.memory.model_budget_mb, "storage": profile.storage.budget_mb}
    why = {"memory": profile.memory.budget_note, "storage": profile.storage.note}
    lines = []
    for kind, field_name, what, value in _BUDGETS:
        limit = limits[kind]
        if limit is not None:
            if pred is not None:
                lines.append(f"{kind} budget checked: {what} {value(pred):.4g} MB within {limit:g} MB "
                             f"({field_name} of {profile.name})")
            continue
        note = " ".join(why[kind].split())
        seen = f" (this plan's {what}: {value(pred):.4g} MB)" if pred is not None else ""
        lines.append(f"{kind} budget NOT checked: profile {profile.name} has {field_name} null"
                     + (f" ({note})" if note else "") + f"{seen}; set {field_name} in the profile "
                     "to have it checked")
    return lines


def _dominates(a: Prediction, b: Prediction) -> bool:
    ka = (a.latency_ms, a.size_bytes, -(a.accuracy or 0.0))
    kb = (b.latency_ms, b.size_bytes, -(b.accuracy or 0.0))
    return all(x <= y for x, y in zip(ka, kb)) and ka != kb


def pareto_front(feasible: Sequence[Any]) -> list[Any]:
    """Non-dominated candidates on (latency, size, accuracy), fastest first, at most PARETO_MAX."""
    front, seen = [], set()
    for c in feasible:
        key = (c.backend, round(c.prediction.latency_ms, 3), c.prediction.size_bytes,
               round(c.prediction.accuracy or 0.0, 4))
        if key in seen or any(_dominates(o.prediction, c.prediction) for o in feasible):
            continue
        seen.add(key)
        front.append(c)
    front.sort(key=lambda c: (c.prediction.latency_ms, c.prediction.size_bytes))
    return front[:PARETO_MAX]


def explain_infeasible(model: str, candidates: Sequence[Any], constraints: Constraints,
                       profile: DeviceProfile) -> str:
    """What was reachable against each limit, and which limit would have to give, and how far."""
    limits = _limits(constraints, profile)
    lines = [f"no plan for {model} on {profile.name} meets every constraint "
             f"({len(candidates)} candidates tried)."]
    for kind in KINDS:
        if limits[kind] is None or not candidates:
            continue
        values = [_value(c.prediction, kind) for c in candidates]
        best = max(values) if kind in _AT_LEAST else min(values)
        others = [c for c in candidates
                  if set(violations(c.prediction, constraints, profile)) <= {kind}]
        line = f"best reachable {kind}: {best:.4g}{_UNITS[kind]} (limit {limits[kind]:g}{_UNITS[kind]})"
        if others:
            needed = [_value(c.prediction, kind) for c in others]
            relax = max(needed) if kind in _AT_LEAST else min(needed)
            line += f"; relaxing it to {relax:.4g}{_UNITS[kind]} alone would give a plan"
        lines.append(line)
    lines += _context_hint(candidates, constraints, profile)
    lines += budget_checks(profile)  # the budgets that could not be checked at all
    lines.append("to get a plan: relax one of the limits above, allow more backends, or enable "
                 "distillation/structured pruning for a smaller model")
    return "\n".join(lines)


def _context_hint(candidates: Sequence[Any], constraints: Constraints, profile: DeviceProfile) -> list[str]:
    """Language models: a smaller KV cache type that holds the asked context, then the context at
    which the smallest-memory candidate would fit the budget."""
    gens = [(c, c.prediction.generation) for c in candidates if c.prediction.generation]
    if not gens or profile.memory.model_budget_mb is None:
        return []
    budget = profile.memory.model_budget_mb
    lines = []
    # a smaller cache type that holds the asked context where the larger ones do not
    fit = [cg for cg in gens if "memory" not in violations(cg[0].prediction, constraints, profile)]
    too_big = sorted({g.get("kv_cache") for _, g in gens} - {g.get("kv_cache") for _, g in fit}, key=str)
    if fit and too_big:
        cand, gen = min(fit, key=lambda cg: (len(violations(cg[0].prediction, constraints, profile)),
                                             cg[0].prediction.peak_memory_mb))
        others = ", ".join(violations(cand.prediction, constraints, profile))
        lines.append(f"a {gen.get('kv_cache')} KV cache holds the asked {gen['context']} tokens where "
                     f"{' or '.join(too_big)} does not: {cand.describe()} needs "
                     f"{cand.prediction.peak_memory_mb:.1f} of the {budget:g} MB"
                     + (f", but breaks {others}" if others else ""))
    # prefer a candidate that only breaks the memory budget
    only_memory = [cg for cg in gens if set(violations(cg[0].prediction, constraints, profile)) <= {"memory"}]
    cand, gen = min(only_memory or gens, key=lambda cg: cg[0].prediction.peak_memory_mb)
    if not gen.get("max_context") or gen["max_context"] >= gen["context"]:
        return lines
    others = set(violations(cand.prediction, constraints, profile)) - {"memory"}
    return lines + [f"a shorter context would fit: {cand.describe()} holds {gen['max_context']} tokens in the "
                    f"{budget:g} MB budget (asked: {gen['context']})"
                    + (f", though it also breaks {', '.join(sorted(others))}" if others else "")
                    + f"; pass --context {gen['max_context']} or less"]
