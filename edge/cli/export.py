"""`edge export` and `edge plan`."""
from __future__ import annotations

import argparse
from typing import Any

from ..errors import EdgeError
from ..backends import BACKENDS
from ..defaults import MIN_ACCURACY
from ..errors import ConfigError
from .common import given, MODEL_HELP, add_text_options, Output, command, render_table


# --- export ---------------------------------------------------------------------------

def _export_row(backend: str, result: Any) -> dict:
    if isinstance(result, EdgeError):
        reason = str(result).splitlines()[0] if str(result) else type(result).__name__
        return {"backend": backend, "file": "-", "status": f"FAILED ({type(result).__name__}): {reason}"}
    m = result.manifest
    val, dele = m.get("validation") or {}, m.get("delegation") or {}
    return {
        "backend": backend, "file": str(result.path), "size": f"{m['size_bytes'] / 1e6:.2f} MB",
        "validation": f"{val['metric']} {val['score']:.4f}" if val else "-",
        "delegation": f"{dele['coverage']:.0%} XNNPACK" if "coverage" in dele else "-",
        "cache": "hit" if m.get("cache_hit") else "miss", "status": "ok",
    }


def _export(args: argparse.Namespace) -> Output:
    from ..backends import BACKENDS
    from ..errors import PartialFailure
    from ..exporter import export, export_all

    plan = None
    if args.plan:
        from ..planner import load_plan

        plan = load_plan(args.plan)
    kwargs = {"plan": plan, "use_cache": not args.no_cache, "cache_dir": args.cache_dir}
    if args.backend == "all":
        from ..backends import get_backend
        from ..models import load_model

        spec = load_model(args.model)
        # 'all' is every backend that takes this kind of model (some run language models only)
        names = [b for b in BACKENDS if spec.generation is not None or not get_backend(b).language_models_only]
        results = export_all(spec, names, args.output, **kwargs)
    else:
        results = {args.backend: export(args.model, args.backend, args.output, **kwargs)}
    failed = {b: r for b, r in results.items() if isinstance(r, EdgeError)}
    data = [
        {"backend": b, "error": str(r), "type": type(r).__name__, "exit_code": r.exit_code}
        if isinstance(r, EdgeError) else {"path": str(r.path), **r.manifest}
        for b, r in results.items()
    ]
    text = render_table([_export_row(b, r) for b, r in results.items()],
                  ["backend", "file", "size", "validation", "delegation", "cache", "status"])
    text += "".join(f"\n\n{b} failed:\n{r}" for b, r in failed.items())
    exit_code = 0
    if failed:
        exit_code = next(iter(failed.values())).exit_code if len(failed) == len(results) else PartialFailure.exit_code
    return Output(data, text, exit_code)


def add_export(sub) -> None:
    p = command(sub, "export", _export, "convert a model to torchscript (.ptl), executorch (.pte) or tflite")
    p.add_argument("model", help=MODEL_HELP)
    add_text_options(p)
    p.add_argument("--backend", required=True, choices=[*BACKENDS, "all"],
                   help="target runtime; 'all' exports to each and reports failures as rows")
    p.add_argument("--plan", help="compression plan (YAML/JSON from `edge plan`) applied before export")
    p.add_argument("-o", "--output", required=True, help="output directory (one folder per artifact)")
    p.add_argument("--no-cache", action="store_true", help="convert even if the artifact cache has it")
    p.add_argument("--cache-dir", help="artifact cache (default $EDGE_CACHE_DIR or ~/.cache/edge/artifacts)")


# --- plan -----------------------------------------------------------------------------

def _range(pred: dict) -> str:
    span = pred.get("latency_range_ms")
    if not isinstance(span, dict) or pred.get("generation"):
        return ""
    return f" (range {span['low']}-{span['high']} ms)"


def _memory_parts(pred: dict) -> str:
    """`` (runtime R MB + model M MB)``: the peak's two parts, where the plan has them."""
    if pred.get("runtime_memory_mb") is None or pred.get("model_memory_mb") is None:
        return ""  # a plan from before the split
    return f" (runtime {pred['runtime_memory_mb']} MB + model {pred['model_memory_mb']} MB)"


def _render_plan(plan) -> str:
    pred = plan.predicted
    lines = [f"plan for {plan.model} on {plan.profile}: backend {plan.backend}",
             "recipe: " + (", ".join(c.label() for c in plan.recipe) or "none (fp32)"),
             "groups: " + ", ".join(f"{g}={p}" for g, p in plan.groups.items()),
             f"predicted: size {pred['size_mb']} MB, peak memory {pred['peak_memory_mb']} MB{_memory_parts(pred)}, "
             f"latency {pred['latency_ms']} ms{_range(pred)}, accuracy {pred['accuracy']} ({plan.accuracy_basis})"]
    gen = pred.get("generation")
    if gen:
        lines.append(f"generation at context {gen['context']}: KV cache {gen['kv_cache_mb']} MB "
                     f"({gen.get('kv_cache', 'fp32')}), time to first "
                     f"token {gen['ttft_ms']} ms, prefill {gen['prefill_tok_s']} tok/s, decode "
                     f"{gen['decode_tok_s']} tok/s; largest context that fits: {gen['max_context']}")
    lines += ["", "Pareto front (feasible alternatives):"]
    rows = [{"backend": a["backend"], "structure": a["structure"],
             "groups": (" ".join(f"{g}={p}" for g, p in a["groups"].items() if p != "fp32") or "fp32")
             + (f" kv={a['kv_cache']}" if a.get("kv_cache") else ""),
             "size_mb": a["predicted"]["size_mb"], "memory_mb": a["predicted"]["peak_memory_mb"],
             "latency_ms": a["predicted"]["latency_ms"], "accuracy": a["predicted"]["accuracy"],
             "basis": a["accuracy_basis"]} for a in plan.pareto]
    lines.append(render_table(rows, ["backend", "structure", "groups", "size_mb", "memory_mb", "latency_ms",
                               "accuracy", "basis"]))
    lines += ["", "reasons:"] + [f"  - {r}" for r in plan.reasons]
    if plan.notes:
        lines += ["", "cost-model notes:"] + [f"  - {n}" for n in plan.notes]
    return "\n".join(lines)


def _plan(args: argparse.Namespace) -> Output:
    from ..models import load_model
    from ..planner import Constraints, make_plan, save_plan
    from ..profiles import load_profile

    backends = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    limits = given(args, "min_accuracy", "max_latency_ms", "max_size_mb", "context", "min_decode_tok_s",
                   "max_ttft_ms")
    if args.max_ppl_increase is not None:
        if "min_accuracy" in limits or args.max_ppl_increase < 0:
            raise ConfigError(f"expected --max-ppl-increase >= 0 and no --min-accuracy beside it, found "
                              f"{args.max_ppl_increase} and {limits.get('min_accuracy')}")
        # the perplexity metric is ppl_fp32 / ppl_candidate: +5 % perplexity is a score of 1 / 1.05
        limits["min_accuracy"] = 1.0 / (1.0 + args.max_ppl_increase / 100.0)
    constraints = Constraints(**limits)
    plan = make_plan(load_model(args.model), load_profile(args.profile), constraints,
                     backends=backends, distill=args.distill)
    text = _render_plan(plan)
    if args.output:
        text += f"\n\nwritten to {save_plan(plan, args.output)}"
    return Output(plan.to_dict(), text)


def add_plan(sub) -> None:
    p = command(sub, "plan", _plan, "choose compression recipe and backend for a device")
    p.add_argument("model", help=MODEL_HELP)
    add_text_options(p)
    p.add_argument("--profile", required=True, help="device profile name or YAML path")
    p.add_argument("--min-accuracy", type=float, default=None,
                   help=f"minimum metric vs fp32 (1.0 = identical; default {MIN_ACCURACY})")
    p.add_argument("--max-latency-ms", type=float, default=None,
                   help="predicted latency limit (language models: ms per generated token)")
    p.add_argument("--max-size-mb", type=float, default=None, help="artifact size limit")
    p.add_argument("--max-ppl-increase", type=float, default=None, metavar="PCT",
                   help="language models: accepted perplexity increase over fp32 in percent (instead of "
                        "--min-accuracy; 5 means a score of 1/1.05)")
    p.add_argument("--context", type=int, default=None,
                   help="language models: the context (tokens) the plan must hold in memory (default: the model's)")
    p.add_argument("--min-decode-tok-s", type=float, default=None, help="language models: decode speed floor")
    p.add_argument("--max-ttft-ms", type=float, default=None, help="language models: time-to-first-token limit")
    p.add_argument("--backends", default=None, help="comma-separated backends to consider")
    p.add_argument("--distill", action="store_true",
                   help="also try a distilled shallower student (trains up to 30 s)")
    p.add_argument("-o", "--output", default=None, help="write the plan (.yaml/.yml/.json)")
