"""Predicted vs measured latency, three times over: does the cost model hold up on a rerun?

Each run calibrates the `local` target (`edge profiles calibrate`, probes repeated, median
taken) and then measures every model x backend x plan (fp32, int8 dynamic) with
edge.benchmark on this machine, ``--measure-repeats`` times in interleaved rounds (median of the
repeats' p50s, as for the probes), comparing the measured p50 with the cost model's prediction
(edge.planner.cost.predict) from that run's calibrated profile and from the shipped,
uncalibrated one (peaks derived from /proc/cpuinfo). It prints one row per case (APE = absolute
percentage error vs p50; "in range": the measurement fell inside the predicted range), then per
run and over all runs the median APE and the share of cases within +-10 % and +-20 %, for the
zoo models (the targets) and the held-out user model (benchmarks/heldout_model.py, never used to
shape the model) apart, with the date and the load average before and after each run.
Calibration and runs use the same thread count (default 1: far less noisy on a shared host).

    .venv/bin/python benchmarks/predicted_vs_measured.py                  # 3 runs, ~1 h on a 2-core host
    .venv/bin/python benchmarks/predicted_vs_measured.py --runs 1 --models tiny-mlp,tiny-lm \
        --backends executorch --json out.json
    .venv/bin/python benchmarks/predicted_vs_measured.py --measured out.json   # re-predict only

Each case is exported once (the first run); later runs re-calibrate and re-measure.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
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
from edge.planner.uncertainty import within  # noqa: E402
from edge.profiles import load_profile  # noqa: E402
from edge.targets import LOCAL_PROFILE  # noqa: E402

ZOO = ("tiny-mlp", "tiny-cnn", "tiny-lm", "minilm")
HELD_OUT = "benchmarks/heldout_model.py:heldout"
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


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


_EXPORTED: dict[tuple, object] = {}  # (model, backend, plan) -> artifact, exported in this process


def measure_cases(cases: list[tuple], out_dir: Path, iterations: int, threads, repeats: int) -> dict:
    """Every (spec, backend, plan) case timed ``repeats`` times in interleaved rounds (as the
    calibration times its probes: a burst of a neighbour's load hits one repeat of many cases, not
    every repeat of one); each case's figure is the median of its repeats' p50s. A case is exported
    once per process: later runs re-measure the same artifact."""
    artifacts = {}
    for spec, backend, plan in cases:
        key = (spec.name, backend, plan)
        if key not in _EXPORTED:
            _EXPORTED[key] = export(spec, backend, out_dir, plan=recipe_for(plan), validate=False)
        artifacts[key] = _EXPORTED[key]
    p50s: dict[tuple, list[float]] = {key: [] for key in artifacts}
    mins: dict[tuple, list[float]] = {key: [] for key in artifacts}
    for _ in range(repeats):
        for key, artifact in artifacts.items():
            result = bench(artifact.path, "local", warmup=5, iterations=iterations, threads=threads)
            p50s[key].append(result.latency_ms["p50"])
            mins[key].append(result.latency_ms["min"])
    return {key: {"p50_ms": statistics.median(p50s[key]), "p50s_ms": p50s[key], "min_ms": min(mins[key])}
            for key in artifacts}


def calibrate_run(args: argparse.Namespace, index: int) -> Path:
    start = time.perf_counter()
    cal = calibrate("local", backends=args.backends, threads=args.threads, repeats=args.repeats,
                    max_spread=args.max_spread)
    path = save_calibrated_profile(cal.profile, cal.block, Path(args.out_dir) / f"run{index}" / f"{LOCAL_PROFILE}.yaml")
    print(f"run {index}: calibrated local in {time.perf_counter() - start:.1f} s (spread "
          f"{cal.block['spread']}, probe error {cal.block['probe_error']}) -> {path}", file=sys.stderr)
    return path


def predict_row(row: dict, stats, calibrated, shipped) -> dict:
    assignment = assignment_for(row["plan"], row["backend"], list(stats.groups))
    pred = cost.predict(stats, assignment, row["backend"], calibrated)
    row.update(predicted_ms=pred.latency_ms, range_ms=list(pred.latency_range_ms),
               uncalibrated_ms=cost.predict(stats, assignment, row["backend"], shipped).latency_ms)
    row["err"] = (row["predicted_ms"] - row["p50_ms"]) / row["p50_ms"]
    row["err_uncalibrated"] = (row["uncalibrated_ms"] - row["p50_ms"]) / row["p50_ms"]
    row["in_range"] = within(row["p50_ms"], row["range_ms"])
    return row


def one_run(args: argparse.Namespace, index: int, previous: dict | None, shipped) -> dict:
    before = previous["load_before"] if previous else load_average()
    started = previous["started"] if previous else datetime.datetime.now().isoformat(timespec="seconds")
    profile_path = Path(previous["profile"]) if previous else \
        Path(args.profile) if args.profile else calibrate_run(args, index)
    calibrated = load_profile(profile_path)
    old = {(r["model"], r["backend"], r["plan"]): r for r in previous["rows"]} if previous else {}
    specs = {model: load_model(model) for model in args.models}
    keys = [(model, backend, plan) for model in args.models for backend in args.backends for plan in args.plans
            if not previous or (model, backend, plan) in old]
    if previous:
        measured = {k: {f: old[k][f] for f in ("p50_ms", "p50s_ms", "min_ms") if f in old[k]} for k in keys}
    else:
        by_name = measure_cases([(specs[m], b, p) for m, b, p in keys], Path(args.out_dir), args.iterations,
                                args.threads, args.measure_repeats)
        measured = {(m, b, p): by_name[(specs[m].name, b, p)] for m, b, p in keys}
    rows, stats = [], {}
    for model, backend, plan in keys:
        if model not in stats:
            stats[model] = count_stats(specs[model].model.eval(), specs[model].example_inputs)
        row = predict_row({"model": model, "backend": backend, "plan": plan, **measured[(model, backend, plan)]},
                          stats[model], calibrated, shipped)
        rows.append(row)
        print(f"run {index}: " + _row(row), file=sys.stderr, flush=True)
    return {"run": index, "started": started, "load_before": before,
            "load_after": previous["load_after"] if previous else load_average(),
            "profile": str(profile_path), "calibration": calibrated.calibration, "rows": rows}


def summary(rows: list[dict]) -> dict:
    if not rows:
        return {"cases": 0}
    apes = [abs(r["err"]) for r in rows]
    return {"cases": len(rows), "mdape": statistics.median(apes),
            "within10": sum(a <= 0.10 for a in apes) / len(apes),
            "within20": sum(a <= 0.20 for a in apes) / len(apes),
            "in_range": sum(r["in_range"] for r in rows) / len(rows),
            "mdape_uncalibrated": statistics.median(abs(r["err_uncalibrated"]) for r in rows)}


def _split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    return [r for r in rows if r["model"] in ZOO], [r for r in rows if r["model"] not in ZOO]


def _row(r: dict) -> str:
    lo, hi = r["range_ms"]
    return (f"{r['model'][:13]:<13} {r['backend']:<12} {r['plan']:<5}{r['p50_ms']:>10.3f}{r['predicted_ms']:>10.3f}"
            f"  [{lo:.3f}, {hi:.3f}]{'' if r['in_range'] else ' out':<4}{100 * r['err']:>+9.1f}%"
            f"{r['uncalibrated_ms']:>11.3f}{100 * r['err_uncalibrated']:>+10.1f}%")


def _line(label: str, s: dict) -> str:
    if not s.get("cases"):
        return f"{label}: no cases"
    return (f"{label}: median APE {100 * s['mdape']:.1f}%, within +-10% {100 * s['within10']:.0f}%, "
            f"within +-20% {100 * s['within20']:.0f}%, inside predicted range {100 * s['in_range']:.0f}% "
            f"({s['cases']} cases); uncalibrated median APE {100 * s['mdape_uncalibrated']:.1f}%")


def render(result: dict) -> str:
    head = (f"{'model':<13} {'backend':<12} {'plan':<5}{'p50 ms':>10}{'pred ms':>10}  {'predicted range':<22}"
            f"{'err':>9}{'uncal ms':>12}{'uncal err':>10}")
    lines = [f"predicted vs measured latency on local, threads={result['threads'] or 'runtime default'}; "
             f"err = (predicted - p50) / p50"]
    for run in result["runs"]:
        lines += ["", f"run {run['run']}: started {run['started']}, load average before "
                  f"{run['load_before']}, after {run['load_after']}", head, "-" * len(head)]
        lines += [_row(r) for r in run["rows"]]
    lines.append("")
    zoo_all, held_all = [], []
    for run in result["runs"]:
        zoo, held = _split(run["rows"])
        zoo_all += zoo
        held_all += held
        lines.append(_line(f"run {run['run']} zoo", summary(zoo)))
        if held:
            lines.append(_line(f"run {run['run']} held-out", summary(held)))
    mdapes = [summary(_split(run["rows"])[0]).get("mdape") for run in result["runs"]]
    mdapes = [m for m in mdapes if m is not None]
    lines.append(_line("all runs zoo", summary(zoo_all)))
    if held_all:
        lines.append(_line("all runs held-out", summary(held_all)))
    if mdapes:
        lines.append(f"zoo median APE over runs: {100 * statistics.median(mdapes):.1f}% "
                     f"(range {100 * min(mdapes):.1f}-{100 * max(mdapes):.1f}%)")
    lines.append(f"printed {datetime.datetime.now().isoformat(timespec='seconds')}, load average {load_average()}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="calibrate + measure this many times")
    p.add_argument("--profile", help="a calibrated profile YAML for every run (default: calibrate each run)")
    p.add_argument("--models", default=",".join((*ZOO, HELD_OUT)))
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--plans", default="fp32,int8")
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--measure-repeats", type=int, default=3,
                   help="timings per case, in interleaved rounds (median of their p50s taken)")
    p.add_argument("--repeats", type=int, default=3, help="calibration: timings per probe")
    p.add_argument("--max-spread", type=float, default=None,
                   help="calibration: refuse above this spread (default: record it, never refuse)")
    p.add_argument("--threads", type=int, default=1,
                   help="runtime threads for calibration and runs (0: the runtime's default)")
    p.add_argument("--measured", help="a previous --json result: reuse its profiles and timings, re-predict")
    p.add_argument("--out-dir", default=None, help="artifact and profile folder (default: a temporary one)")
    p.add_argument("--json", help="also write the result as JSON here")
    args = p.parse_args()
    args.models, args.backends, args.plans = (s.split(",") for s in (args.models, args.backends, args.plans))
    args.threads = args.threads or None
    logging.basicConfig(level=logging.WARNING)
    previous = json.loads(Path(args.measured).read_text()) if args.measured else None
    shipped = load_profile(REPO / "device_profiles" / f"{LOCAL_PROFILE}.yaml")
    with tempfile.TemporaryDirectory(prefix="edge-pvm-") as tmp:
        args.out_dir = args.out_dir or tmp
        runs = []
        for i in range(len(previous["runs"]) if previous else args.runs):
            runs.append(one_run(args, i + 1, previous["runs"][i] if previous else None, shipped))
            if args.json:  # after every run: a long benchmark that stops keeps what it measured
                Path(args.json).write_text(json.dumps({"threads": args.threads, "runs": runs}, indent=2, default=str))
    result = {"threads": args.threads, "runs": runs}
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
