"""Predicted vs measured latency: the planner's cost model against the `local` target.

Calibrates the `local` target (or reads a calibrated profile given with --profile), then for
each zoo model x backend x plan (fp32, int8 dynamic) compares the cost model's predicted
latency (edge.planner.cost.predict with that profile) with the p50 measured by edge.benchmark on
this machine. Prints one row per case with the absolute percentage error (APE) of the
prediction against the measured p50 and against the measured minimum, and the median APE
(MdAPE) over all cases, with the calibrated and with the uncalibrated (shipped) profile.
Calibration and runs use the same thread count (default 1: far less noisy on a shared host).

    .venv/bin/python benchmarks/predicted_vs_measured.py
    .venv/bin/python benchmarks/predicted_vs_measured.py --profile ~/.config/edge/profiles/local-x86_64.yaml \
        --models tiny-mlp,tiny-lm --backends executorch --json out.json
    .venv/bin/python benchmarks/predicted_vs_measured.py --measured out.json   # re-predict only

Exports go through the exporter's artifact cache, so a second run only re-measures.
Host timings on a shared machine are noisy: compare runs made back to back.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.benchmark import bench  # noqa: E402
from edge.calibrate import calibrate, save_calibrated_profile  # noqa: E402
from edge.compress import Int8DynamicConfig  # noqa: E402
from edge.exporter import export  # noqa: E402
from edge.models import load_model  # noqa: E402
from edge.planner import cost  # noqa: E402
from edge.planner.stats import count_stats  # noqa: E402
from edge.profiles import load_profile  # noqa: E402
from edge.targets import LOCAL_PROFILE  # noqa: E402

MODELS = ("tiny-mlp", "tiny-cnn", "tiny-lm", "minilm")
BACKENDS = ("torchscript", "executorch", "tflite")
LINEAR_GROUPS = ("attention", "ffn", "head", "linear")  # what int8 dynamic quantizes


def assignment_for(plan: str, backend: str, groups: list[str]) -> dict[str, str]:
    """Per-group precision the cost model sees for ``plan`` (as the planner assigns it)."""
    if plan == "fp32":
        return {g: "fp32" for g in groups}
    if backend == "tflite":  # dynamic-range quantization covers every weight
        return {g: "int8" for g in groups}
    return {g: "int8" if g in LINEAR_GROUPS else "fp32" for g in groups}


def recipe_for(plan: str):
    return None if plan == "fp32" else {"tag": "int8", "recipe": [Int8DynamicConfig().to_dict()]}


def measure_case(spec, backend: str, plan: str, out_dir: Path, iterations: int, threads) -> dict:
    start = time.perf_counter()
    artifact = export(spec, backend, out_dir, plan=recipe_for(plan), validate=False)
    export_s = time.perf_counter() - start
    result = bench(artifact.path, "local", warmup=5, iterations=iterations, threads=threads)
    return {"p50_ms": result.latency_ms["p50"], "min_ms": result.latency_ms["min"],
            "export_s": export_s, "cache_hit": bool(artifact.manifest.get("cache_hit"))}


def _calibrated_profile(args: argparse.Namespace):
    if args.profile:
        return load_profile(args.profile)
    start = time.perf_counter()
    cal = calibrate("local", backends=args.backends, threads=args.threads)
    path = save_calibrated_profile(cal.profile, cal.block, Path(args.out_dir) / f"{LOCAL_PROFILE}.yaml")
    print(f"calibrated local in {time.perf_counter() - start:.1f} s -> {path}", file=sys.stderr)
    return load_profile(path)


def run(args: argparse.Namespace) -> dict:
    previous = json.loads(Path(args.measured).read_text()) if args.measured else None
    if previous:
        calibrated = load_profile(previous["profile"])
        measured_rows = {(r["model"], r["backend"], r["plan"]): r for r in previous["rows"]}
    else:
        calibrated = _calibrated_profile(args)
    shipped = load_profile(REPO / "device_profiles" / f"{LOCAL_PROFILE}.yaml")
    rows = []
    for model in args.models:
        spec = load_model(model)
        stats = count_stats(spec.model.eval(), spec.example_inputs)
        for backend in args.backends:
            for plan in args.plans:
                assignment = assignment_for(plan, backend, list(stats.groups))
                if previous:
                    old = measured_rows[(model, backend, plan)]
                    measured = {k: old[k] for k in ("p50_ms", "min_ms", "export_s", "cache_hit")}
                else:
                    measured = measure_case(spec, backend, plan, Path(args.out_dir), args.iterations,
                                            args.threads)
                row = {"model": model, "backend": backend, "plan": plan, **measured,
                       "predicted_ms": cost.predict(stats, assignment, backend, calibrated).latency_ms,
                       "uncalibrated_ms": cost.predict(stats, assignment, backend, shipped).latency_ms}
                for key in ("predicted", "uncalibrated"):
                    row[f"ape_{key}"] = abs(row[f"{key}_ms"] - row["p50_ms"]) / row["p50_ms"]
                row["ape_predicted_min"] = abs(row["predicted_ms"] - row["min_ms"]) / row["min_ms"]
                rows.append(row)
                print(_row(rows[-1]), file=sys.stderr, flush=True)
    return {"profile": str(calibrated.path), "threads": args.threads,
            "calibration": calibrated.calibration, "rows": rows,
            **{f"mdape_{k}": statistics.median(r[f"ape_{k}"] for r in rows)
               for k in ("predicted", "predicted_min", "uncalibrated")}}


COLUMNS = ("p50", "min", "predicted", "uncalibrated")
ERRORS = (("predicted", "err vs p50"), ("predicted_min", "err vs min"), ("uncalibrated", "uncal vs p50"))


def _row(r: dict) -> str:
    cells = [f"{r[f'{c}_ms']:>16.3f}" for c in COLUMNS]
    signed = {"predicted": (r["predicted_ms"] - r["p50_ms"]) / r["p50_ms"],
              "predicted_min": (r["predicted_ms"] - r["min_ms"]) / r["min_ms"],
              "uncalibrated": (r["uncalibrated_ms"] - r["p50_ms"]) / r["p50_ms"]}
    return (f"{r['model']:<9} {r['backend']:<12} {r['plan']:<5}" + "".join(cells)
            + "".join(f"{100 * signed[k]:>+14.1f}%" for k, _ in ERRORS))


def render(result: dict) -> str:
    head = (f"{'model':<9} {'backend':<12} {'plan':<5}" + "".join(f"{c + ' ms':>16}" for c in COLUMNS)
            + "".join(f"{title:>15}" for _, title in ERRORS))
    lines = [f"latency on local, threads={result['threads'] or 'runtime default'}; "
             "err = (predicted - measured) / measured", head, "-" * len(head)]
    lines += [_row(r) for r in result["rows"]]
    lines += [f"median APE, calibrated profile, vs p50:   {100 * result['mdape_predicted']:.1f}%",
              f"median APE, calibrated profile, vs min:   {100 * result['mdape_predicted_min']:.1f}%",
              f"median APE, uncalibrated profile, vs p50: {100 * result['mdape_uncalibrated']:.1f}%"]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", help="a calibrated profile YAML (default: calibrate local first)")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--backends", default="torchscript,executorch")
    p.add_argument("--plans", default="fp32,int8")
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--threads", type=int, default=1,
                   help="runtime threads for calibration and runs (0: the runtime's default)")
    p.add_argument("--measured", help="a previous --json result: reuse its profile and timings, re-predict")
    p.add_argument("--out-dir", default=None, help="artifact folder (default: a temporary one)")
    p.add_argument("--json", help="also write the result as JSON here")
    args = p.parse_args()
    args.models, args.backends, args.plans = (s.split(",") for s in (args.models, args.backends, args.plans))
    args.threads = args.threads or None
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="edge-pvm-") as tmp:
        args.out_dir = args.out_dir or tmp
        result = run(args)
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
