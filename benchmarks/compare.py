#!/usr/bin/env python3
"""Wall time of `edge compare` on the `local` target, cold and warm.

cold: a fresh artifact cache and a fresh output folder (everything is planned,
      exported, validated and measured);
warm: the same command again (everything comes from the output folder's state).

    .venv/bin/python benchmarks/compare.py            # tiny-cnn cold + warm, minilm cold
    .venv/bin/python benchmarks/compare.py --no-minilm

Goals: tiny-cnn cold <= 60 s, warm <= 5 s; minilm cold <= 6 min.
Each run is a fresh `edge` process, so interpreter and toolchain start-up count.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EDGE = [sys.executable, "-m", "edge"]
GOALS_S = {("tiny-cnn", "cold"): 60.0, ("tiny-cnn", "warm"): 5.0, ("minilm", "cold"): 360.0}
SMALL_MODEL = "tiny-cnn"


def run_compare(model: str, out: Path, cache: Path, db: Path, extra: list[str]) -> tuple[float, dict]:
    env = {**os.environ, "EDGE_CACHE_DIR": str(cache), "EDGE_RESULTS_DB": str(db)}
    argv = [*EDGE, "compare", model, "--profile", "raspberry-pi-4-4gb", "--target", "local",
            "--backends", "all", "-o", str(out), "--json", *extra]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - start
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"edge compare {model} printed no JSON (exit {proc.returncode})")
    return seconds, data


def step_seconds(data: dict) -> str:
    parts = {}
    for s in data.get("steps", []):
        if not s["cached"]:
            parts[f"{s['backend']}:{s['step']}"] = parts.get(f"{s['backend']}:{s['step']}", 0.0) + s["seconds"]
    return ", ".join(f"{k} {v:.1f}s" for k, v in parts.items()) or "all cached"


def report(model: str, phase: str, seconds: float, data: dict) -> None:
    goal = GOALS_S.get((model, phase))
    verdict = "" if goal is None else f"  goal <= {goal:.0f} s: {'met' if seconds <= goal else 'MISSED'} " \
                                      f"({seconds / goal:.2f}x of budget)"
    rows = ", ".join(f"{r['backend']} {r['latency_ms']['p50']:.2f} ms" if r.get("latency_ms") else
                     f"{r['backend']} FAILED" for r in data.get("rows", []))
    print(f"{model:9s} {phase}: {seconds:7.1f} s  exit {data.get('exit_code')}{verdict}", flush=True)
    print(f"          rows: {rows}")
    print(f"          steps: {step_seconds(data)}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minilm", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure minilm cold (several minutes; default on)")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--model", default=SMALL_MODEL, help=f"the small model timed cold and warm ({SMALL_MODEL})")
    args = parser.parse_args()
    extra = ["--iterations", str(args.iterations)]
    print(f"edge compare wall time on this machine ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="edge-bench-compare-") as tmp:
        root = Path(tmp)
        small = args.model
        out, cache, db = root / small, root / "cache", root / "results.db"
        seconds, data = run_compare(small, out, cache, db, extra)
        report(small, "cold", seconds, data)
        seconds_warm, data = run_compare(small, out, cache, db, extra)
        report(small, "warm", seconds_warm, data)
        print(f"{small:9s} cold/warm ratio: {seconds / seconds_warm:.1f}x")
        if args.minilm:
            seconds, data = run_compare("minilm", root / "minilm", cache, db, extra)
            report("minilm", "cold", seconds, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
