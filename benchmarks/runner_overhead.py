"""Runner overhead: latency the on-device runner reports vs a plain in-process timing loop.

For each backend, exports the model (edge.exporter, cached), then
  * runs edge/runner/runner.py as a subprocess (what `edge bench` does on a device),
  * loads the same artifact in this process with the same runtime and times a bare loop
    (perf_counter_ns around each invoke, no JSON, no context collection),
alternating the two `--rounds` times, and prints the medians and their ratio
(goal: runner within 3 % of the bare loop).

    .venv/bin/python benchmarks/runner_overhead.py [--model tiny-cnn] [--iterations 300]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.benchmark import RUNNER_PATH  # noqa: E402
from edge.exporter import export  # noqa: E402


def load_runner():
    spec = importlib.util.spec_from_file_location("edge_runner", RUNNER_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def runner_median(path: Path, backend: str, warmup: int, iterations: int, threads: int) -> float:
    proc = subprocess.run([sys.executable, str(RUNNER_PATH), "--artifact", str(path), "--backend",
                           backend, "--inputs", str(path.parent / "sample_inputs.npz"),
                           "--warmup", str(warmup), "--iterations", str(iterations),
                           "--threads", str(threads)], capture_output=True, text=True, check=True)
    return statistics.median(json.loads(proc.stdout)["latencies_ms"])


def inprocess_median(runner, path: Path, backend: str, warmup: int, iterations: int,
                     threads: int) -> float:
    arrays = runner.load_inputs(str(path.parent / "sample_inputs.npz"), str(path))
    _, _, invoke = runner.LOADERS[backend](str(path), arrays, threads)
    for _ in range(warmup + 1):
        invoke()
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter_ns()
        invoke()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(samples)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny-cnn")
    ap.add_argument("--backends", default="torchscript,executorch,tflite")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    runner = load_runner()
    out_dir = Path(tempfile.mkdtemp(prefix="edge-runner-overhead-"))
    print(f"{args.model}, {args.iterations} iterations after {args.warmup} warm-up, "
          f"{args.threads} thread(s), median of per-round medians over {args.rounds} rounds")
    worst = 0.0
    for backend in args.backends.split(","):
        path = export(args.model, backend, out_dir).path
        rr, ip = [], []
        for _ in range(args.rounds):
            rr.append(runner_median(path, backend, args.warmup, args.iterations, args.threads))
            ip.append(inprocess_median(runner, path, backend, args.warmup, args.iterations,
                                       args.threads))
        r, i = statistics.median(rr), statistics.median(ip)
        worst = max(worst, abs(r / i - 1))
        print(f"  {backend:12s} runner {r:8.4f} ms   in-process {i:8.4f} ms   "
              f"ratio {r / i:.3f}  ({(r / i - 1) * 100:+.1f} %)")
    print(f"largest difference {worst * 100:.1f} % (goal <= 3 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
