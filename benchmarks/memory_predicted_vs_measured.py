"""Predicted vs measured memory: the runtime's own RSS and the model's share, as the device sees them.

The `local` target is calibrated once (`edge profiles calibrate`, one repeat per probe; `--profile`
reuses a calibrated profile), then every model x backend x plan (fp32, int8 dynamic) is exported
and benched with edge.benchmark on this machine. The runner reports the RSS with the runtime
imported and no model loaded (`baseline_rss_mb`) and its peak (`peak_rss_mb`); the cost model
(edge.planner.cost.predict, plus the KV cache for a language model that generates) predicts the
runtime (`runtime_memory_mb`) and what the model adds (`model_memory_mb`). One row per case:
the runtime (predicted vs measured baseline), the model's share (predicted vs peak - baseline)
and the peak (predicted vs measured), in MB with err = (predicted - measured) / measured; then
per backend and over all cases the median absolute percentage error (APE) of each, and the
median absolute error of the model's share in MB (small models add a few MB at most, where a
percentage says little). Calibration and runs use one thread.

    .venv/bin/python benchmarks/memory_predicted_vs_measured.py                  # ~15 min (~30 cold)
    .venv/bin/python benchmarks/memory_predicted_vs_measured.py --profile cal.yaml --models tiny-mlp \
        --backends tflite --json out.json
    .venv/bin/python benchmarks/memory_predicted_vs_measured.py --measured out.json   # re-predict only

Exports go through the exporter's artifact cache, so a second run only re-measures.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from edge.benchmark import bench  # noqa: E402
from edge.calibrate import calibrate, save_calibrated_profile  # noqa: E402
from edge.errors import EdgeError  # noqa: E402
from edge.exporter import export  # noqa: E402
from edge.models import load_model  # noqa: E402
from edge.planner.cost import predict  # noqa: E402
from edge.planner.llm_cost import predict_generation  # noqa: E402
from edge.planner.stats import count_stats  # noqa: E402
from edge.profiles import load_profile  # noqa: E402
from edge.targets import LOCAL_PROFILE  # noqa: E402
from predicted_vs_measured import BACKENDS, assignment_for, load_average, recipe_for  # noqa: E402

MODELS = ("tiny-mlp", "tiny-cnn", "tiny-lm", "minilm", "tiny-llama")
PARTS = ("runtime", "model", "peak")
NEW_TOKENS = 16  # a language model generates this many tokens after its sample prompt


def measure_case(spec, backend: str, plan: str, out_dir: Path, iterations: int) -> dict:
    """The runner's baseline and peak RSS (MB) for one export, or the error that stopped it."""
    try:
        artifact = export(spec, backend, out_dir, plan=recipe_for(plan), validate=False)
        gen = {"new_tokens": NEW_TOKENS} if spec.generation is not None else {}
        result = bench(artifact.path, "local", warmup=2, iterations=iterations, threads=1, **gen)
    except EdgeError as exc:
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}
    return {"baseline_rss_mb": result.baseline_rss_mb, "peak_rss_mb": result.peak_rss_mb,
            "size_bytes": result.size_bytes}


def predicted_memory(spec, stats, backend: str, plan: str, profile) -> dict:
    """The cost model's runtime, model share and peak (MB), the KV cache included for a generator."""
    assignment = assignment_for(plan, backend, list(stats.groups))
    pred = predict(stats, assignment, backend, profile)
    if spec.generation is not None:  # as the planner does: the cache at the export's context
        cfg = spec.generation.config
        gen = predict_generation(stats, assignment, backend, profile, cfg, int(spec.example_inputs[0].shape[1]),
                                 cfg.context, pred.peak_memory_mb)
        pred.add_model_memory(gen.kv_cache_mb)
    return {"runtime": pred.runtime_memory_mb, "model": pred.model_memory_mb, "peak": pred.peak_memory_mb}


def compare_row(row: dict, predicted: dict) -> dict:
    """Predicted and measured runtime, model share and peak, and each error."""
    measured = {"runtime": row["baseline_rss_mb"], "model": row["peak_rss_mb"] - row["baseline_rss_mb"],
                "peak": row["peak_rss_mb"]}
    for part in PARTS:
        row[f"{part}_predicted_mb"], row[f"{part}_measured_mb"] = predicted[part], measured[part]
        row[f"{part}_err"] = (predicted[part] - measured[part]) / measured[part] if measured[part] > 0 else None
    return row


def calibrate_local(args: argparse.Namespace) -> Path:
    start = time.perf_counter()
    cal = calibrate("local", backends=args.backends, threads=1, repeats=args.repeats, max_spread=None)
    path = save_calibrated_profile(cal.profile, cal.block, Path(args.out_dir) / f"{LOCAL_PROFILE}.yaml")
    print(f"calibrated local in {time.perf_counter() - start:.1f} s, runtime memory "
          f"{cal.block.get('runtime_memory_mb')} MB -> {path}", file=sys.stderr)
    return path


def calibrated_profile(args: argparse.Namespace, previous: dict | None):
    """The calibrated local profile: ``--profile``, else the previous result's calibration, else a new one."""
    if args.profile:
        return load_profile(Path(args.profile))
    if previous:
        return load_profile(save_calibrated_profile(load_profile(LOCAL_PROFILE), previous["calibration"],
                                                    Path(args.out_dir) / f"{LOCAL_PROFILE}.yaml"))
    return load_profile(calibrate_local(args))


def run(args: argparse.Namespace, previous: dict | None) -> dict:
    started, before = datetime.datetime.now().isoformat(timespec="seconds"), load_average()
    profile = calibrated_profile(args, previous)
    old = {(r["model"], r["backend"], r["plan"]): r for r in previous["rows"]} if previous else {}
    rows = []
    for model in args.models:
        spec = load_model(model)
        stats = count_stats(spec.model.eval(), spec.example_inputs)
        for backend in args.backends:
            for plan in args.plans:
                key = (model, backend, plan)
                if previous and key not in old:
                    continue
                keep = ("baseline_rss_mb", "peak_rss_mb", "size_bytes", "error")
                measured = {k: old[key][k] for k in keep if k in old[key]} if previous else \
                    measure_case(spec, backend, plan, Path(args.out_dir), args.iterations)
                row = {"model": model, "backend": backend, "plan": plan, **measured}
                if "error" not in row:
                    compare_row(row, predicted_memory(spec, stats, backend, plan, profile))
                rows.append(row)
                print(_row(row), file=sys.stderr, flush=True)
    return {"profile": args.profile or (previous or {}).get("profile") or "calibrated now",
            "calibration": profile.calibration,
            "started": previous["started"] if previous else started,
            "load_before": previous["load_before"] if previous else before,
            "load_after": previous["load_after"] if previous else load_average(), "rows": rows}


def summary(rows: list[dict]) -> dict:
    ok = [r for r in rows if "error" not in r]
    out = {"cases": len(ok), "errors": len(rows) - len(ok)}
    if ok:
        for part in PARTS:
            apes = [abs(r[f"{part}_err"]) for r in ok if r[f"{part}_err"] is not None]
            out[f"{part}_mdape"] = statistics.median(apes) if apes else None
        out["model_mdae_mb"] = statistics.median(abs(r["model_predicted_mb"] - r["model_measured_mb"]) for r in ok)
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.0f}%"


def _row(r: dict) -> str:
    head = f"{r['model'][:10]:<10} {r['backend']:<12} {r['plan']:<5}"
    if "error" in r:
        return f"{head} error: {r['error']}"
    cells = "".join(f"{r[f'{p}_predicted_mb']:>13.1f}{r[f'{p}_measured_mb']:>8.1f}{_pct(r[f'{p}_err']):>7}"
                    for p in PARTS)
    return head + cells


def _line(label: str, s: dict) -> str:
    if not s.get("cases"):
        return f"{label}: no cases ({s.get('errors', 0)} failed)"
    pct = lambda k: "-" if s[k] is None else f"{100 * s[k]:.1f}%"  # noqa: E731
    failed = f", {s['errors']} failed" if s["errors"] else ""
    return (f"{label}: median APE runtime {pct('runtime_mdape')}, model share {pct('model_mdape')} "
            f"(median |error| {s['model_mdae_mb']:.1f} MB), peak {pct('peak_mdape')} ({s['cases']} cases{failed})")


def render(result: dict) -> str:
    head = f"{'model':<10} {'backend':<12} {'plan':<5}" + "".join(
        f"{f'{p} pred':>13}{'meas':>8}{'err':>7}" for p in PARTS)
    lines = [f"predicted vs measured memory (MB) on local, 1 thread; runtime = baseline RSS, model = peak - "
             f"baseline; err = (predicted - measured) / measured; profile {result['profile']}",
             f"started {result['started']}, load average before {result['load_before']}, after "
             f"{result['load_after']}; calibrated runtime memory "
             f"{(result['calibration'] or {}).get('runtime_memory_mb')}", "",
             head, "-" * len(head)]
    lines += [_row(r) for r in result["rows"]]
    lines.append("")
    for backend in dict.fromkeys(r["backend"] for r in result["rows"]):
        lines.append(_line(backend, summary([r for r in result["rows"] if r["backend"] == backend])))
    lines.append(_line("all", summary(result["rows"])))
    lines.append(f"printed {datetime.datetime.now().isoformat(timespec='seconds')}, load average {load_average()}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", help="a calibrated profile YAML (default: calibrate local first, a few minutes)")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--plans", default="fp32,int8")
    p.add_argument("--iterations", type=int, default=10, help="timed inferences per case (memory needs few)")
    p.add_argument("--repeats", type=int, default=1, help="calibration: timings per probe")
    p.add_argument("--measured", help="a previous --json result: reuse its profile and measurements, re-predict")
    p.add_argument("--out-dir", default=None, help="artifact and profile folder (default: a temporary one)")
    p.add_argument("--json", help="also write the result as JSON here")
    args = p.parse_args()
    args.models, args.backends, args.plans = (s.split(",") for s in (args.models, args.backends, args.plans))
    logging.basicConfig(level=logging.WARNING)
    previous = json.loads(Path(args.measured).read_text()) if args.measured else None
    with tempfile.TemporaryDirectory(prefix="edge-mem-") as tmp:
        args.out_dir = args.out_dir or tmp
        result = run(args, previous)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
