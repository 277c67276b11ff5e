"""Invariants of what each loader accepts (used by tests/fuzz_cases.py): each checker returns the problems found."""
from __future__ import annotations

import math
import re
from dataclasses import fields, is_dataclass
from typing import Any

from edge.artifact import Artifact
from edge.backends import BACKENDS
from edge.benchmark import BenchResult
from edge.compress import TechniqueConfig
from edge.planner.plan import Plan
from edge.profiles import ABSURD, ISA_BY_ARCH, OSES, DeviceProfile
from edge.targets import Target
from edge.transports import TRANSPORTS

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _finite_numbers(value: Any, where: str, low: float = -math.inf, high: float = math.inf) -> list[str]:
    """Problems with numbers anywhere inside ``value`` (recursively): non-finite or out of [low, high]."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        ok = math.isfinite(float(value)) if abs(value) < 1e308 or isinstance(value, float) else False
        return [] if ok and low <= value <= high else [f"{where}: number {value!r} not finite in [{low}, {high}]"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _finite_numbers(v, f"{where}.{k}", low, high)]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _finite_numbers(v, f"{where}[{i}]", low, high)]
    return []


def _text(value: Any, where: str, nullable: bool = False, empty: bool = True) -> list[str]:
    if value is None and nullable:
        return []
    if not isinstance(value, str) or (not empty and not value.strip()):
        return [f"{where}: expected {'non-empty ' if not empty else ''}text, found {value!r}"]
    return []


def _int(value: Any, where: str, low: int, high: float = math.inf, nullable: bool = True) -> list[str]:
    if value is None and nullable:
        return []
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return [f"{where}: expected an integer in [{low}, {high}], found {value!r}"]
    return []


def _num(value: Any, where: str, low: float = 0.0, nullable: bool = True) -> list[str]:
    if value is None and nullable:
        return []
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return [f"{where}: expected a number, found {value!r}"]
    return _finite_numbers(value, where, low)


def check_profile(p: DeviceProfile) -> list[str]:
    out = [] if isinstance(p.name, str) and re.fullmatch(r"[a-z0-9][a-z0-9._-]*", p.name) else [f"name {p.name!r}"]
    out += [] if p.arch in ISA_BY_ARCH and p.os in OSES and p.transport in TRANSPORTS else ["arch/os/transport"]
    out += [] if p.runtimes and set(p.runtimes) <= set(BACKENDS) else [f"runtimes {p.runtimes!r}"]
    out += [f"cpu.isa {p.cpu.isa!r}"] if not set(p.cpu.isa) <= set(ISA_BY_ARCH[p.arch]) else []

    def walk(obj: Any, where: str) -> None:
        for f in fields(obj):
            value = getattr(obj, f.name)
            if is_dataclass(value):
                walk(value, f"{where}{f.name}.")
            elif f.name not in ("calibration", "path"):
                out.extend(_finite_numbers(value, where + f.name, 0, ABSURD))
                if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
                    out.append(f"{where}{f.name}: {value!r} <= 0")
    walk(p, "")
    mem = p.memory
    if mem.total_mb and mem.model_budget_mb and mem.model_budget_mb > mem.total_mb:
        out.append("memory.model_budget_mb > memory.total_mb")
    return out


def check_targets(targets: dict[str, Target]) -> list[str]:
    out = []
    for name, t in targets.items():
        out += [] if isinstance(name, str) and SAFE_NAME.fullmatch(name) and t.name == name else [f"name {name!r}"]
        out += [] if t.transport in TRANSPORTS else [f"{name}: transport {t.transport!r}"]
        for f in fields(t):
            value = getattr(t, f.name)
            if f.name == "port":
                out += _int(value, f"{name}.port", 1, 65535)
            elif f.name == "runtime_dists":  # backend -> distribution name
                out += [] if isinstance(value, dict) and all(
                    b in BACKENDS and isinstance(d, str) and SAFE_NAME.fullmatch(d) for b, d in value.items()) \
                    else [f"{name}.runtime_dists: {value!r} is not a mapping of backend to distribution name"]
            elif isinstance(value, (int, float)) and not isinstance(value, bool):  # retries, timeouts
                out += _finite_numbers(value, f"{name}.{f.name}", 0)
            elif value is not None and (not isinstance(value, str) or not value.strip() or CONTROL.search(value)):
                out.append(f"{name}.{f.name}: {value!r} is not a non-empty line of text")
        out += [f"{name}: ssh without host"] if t.transport == "ssh" and not t.host else []
        out += [f"{name}: adb without serial/host"] if t.transport == "adb" and not (t.serial or t.host) else []
    return out


def check_plan(plan: Plan) -> list[str]:
    out = [p for key in ("model", "profile") for p in _text(getattr(plan, key), key, empty=False)]
    out += [] if plan.backend in BACKENDS else [f"backend {plan.backend!r}"]
    out += [] if plan.schema_version == 1 else [f"schema_version {plan.schema_version!r}"]
    out += [] if all(isinstance(c, TechniqueConfig) for c in plan.recipe) else ["recipe"]
    out += [p for c in plan.recipe for p in _finite_numbers(c.to_dict(), f"recipe.{c.type_tag}")]
    for key in ("constraints", "predicted"):
        value = getattr(plan, key)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            out.append(f"{key}: {value!r} is not a mapping with text keys")
        else:
            out += _finite_numbers(value, key, 0)
            out += [f"{key}.{k}: {v!r}" for k, v in value.items() if not isinstance(v, (int, float, dict, type(None)))
                    or isinstance(v, bool)]
    out += [] if isinstance(plan.groups, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in plan.groups.items()) else [f"groups {plan.groups!r}"]
    out += _text(plan.structure, "structure", nullable=True) + _text(plan.accuracy_basis, "accuracy_basis")
    out += [] if isinstance(plan.pareto, list) and all(isinstance(a, dict) for a in plan.pareto) else ["pareto"]
    for key in ("reasons", "notes"):
        value = getattr(plan, key)
        out += [] if isinstance(value, list) and all(isinstance(r, str) for r in value) else [f"{key} {value!r}"]
    return out


def check_artifact(art: Artifact) -> list[str]:
    m = art.manifest
    out = [] if isinstance(m, dict) and m.get("schema_version") == 1 else ["schema_version"]
    out += [] if art.backend in BACKENDS else [f"backend {art.backend!r}"]
    out += [] if isinstance(art.sha256, str) and re.fullmatch(r"[0-9a-f]{64}", art.sha256) else ["sha256"]
    out += [] if art.path.name == m.get("file") and SAFE_NAME.fullmatch(art.path.name) else ["file"]
    out += _int(m.get("size_bytes"), "size_bytes", 0, nullable=False)
    gen = m.get("generation")
    if gen is not None:
        if not isinstance(gen, dict):
            return out + [f"generation {gen!r}"]
        out += _int(gen.get("prefill_tokens"), "generation.prefill_tokens", 1, nullable=False)
        out += _int(gen.get("context"), "generation.context", 1, nullable=False)
        if not out and gen["prefill_tokens"] > gen["context"]:
            out.append("generation.prefill_tokens > context")
        ref = gen.get("reference")
        if ref is not None:
            ok = isinstance(ref, dict) and all(isinstance(ref.get(k), list) and all(
                isinstance(t, int) and not isinstance(t, bool) for t in ref[k]) for k in ("host_tokens", "eager_tokens"))
            out += [] if ok else [f"generation.reference {ref!r}"]
    return out


def check_result(r: BenchResult) -> list[str]:
    out = _text(r.runtime, "runtime", empty=False) + _text(r.runtime_version, "runtime_version", nullable=True)
    out += _int(r.threads, "threads", 1) + _int(r.warmup, "warmup", 0) + _int(r.iterations, "iterations", 1)
    for key in ("load_ms", "first_inference_ms", "import_ms", "peak_rss_mb", "baseline_rss_mb"):
        out += _num(getattr(r, key), key)
    out += [p for x in r.latencies_ms for p in _num(x, "latencies_ms", nullable=False)]
    out += _num(r.latency_ms.get("mean"), "latency_ms.mean", nullable=False)
    out += [p for k, v in r.latency_ms.items() for p in _num(v, f"latency_ms.{k}")]
    out += [] if isinstance(r.context, dict) else ["context"]
    if r.generation is not None:
        gen = r.generation
        out += [] if isinstance(gen.get("tokens", []), list) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in gen.get("tokens", [])) else ["generation.tokens"]
        for key in ("ttft_ms", "prefill_ms", "prefill_tok_s", "decode_tok_s", "kv_cache_bytes", "model_rss_mb",
                    "token_agreement_host", "token_agreement_eager"):
            out += _num(gen.get(key), f"generation.{key}", low=-math.inf if key == "model_rss_mb" else 0)
        for key in ("prompt_tokens", "new_tokens", "tokens_checked"):
            out += _int(gen.get(key), f"generation.{key}", 0)
    return out
