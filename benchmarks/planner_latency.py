"""Predicted vs measured latency and size, after calibrating the cost model on a target.

Calibrates ``--target`` (default ``local``: this machine, profile local-x86_64) with
:mod:`edge.calibrate`, then for a few recipes per model exports the artifact, benches it
there and prints the planner's prediction next to the measurement (ratios near 1.0 mean the
calibrated cost model is right). Not a test: numbers only.

Usage: .venv/bin/python benchmarks/planner_latency.py [--target T] [--models tiny-lm,minilm]
"""
from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from edge.benchmark import bench
from edge.calibrate import calibrate, save_calibrated_profile
from edge.compress import EmbeddingQuantConfig, Int4WeightConfig, Int8DynamicConfig
from edge.exporter import export
from edge.models import load_model
from edge.planner.recipe_cost import predict_recipe
from edge.profiles import load_profile

RECIPES = {
    "fp32": [],
    "int8": [Int8DynamicConfig()],
    "int8+emb8": [Int8DynamicConfig(), EmbeddingQuantConfig(bits=8)],
    "int4g32+emb4": [Int4WeightConfig(group_size=32), EmbeddingQuantConfig(bits=4)],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="local")
    parser.add_argument("--models", default="tiny-lm,minilm")
    parser.add_argument("--backends", default="executorch,torchscript")
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    backends = args.backends.split(",")
    work = Path(tempfile.mkdtemp(prefix="edge-planner-latency-"))
    cal = calibrate(args.target, backends=backends)
    path = save_calibrated_profile(cal.profile, cal.block, work / f"{cal.profile.name}.yaml")
    profile = load_profile(path)
    print(f"calibrated {cal.profile.name} on {args.target}: matmul_gops {cal.block['matmul_gops']}, "
          f"bandwidth {cal.block.get('bandwidth_gbs')} GB/s, overhead_ms {cal.block['overhead_ms']}")
    print(f"{'model':8s} {'backend':11s} {'recipe':13s} {'pred ms':>9s} {'meas ms':>9s} {'ratio':>6s} "
          f"{'pred MB':>8s} {'meas MB':>8s}")
    for name in args.models.split(","):
        spec = load_model(name)
        for backend in backends:
            for label, recipe in RECIPES.items():
                if backend == "torchscript" and label.startswith("int4"):
                    continue
                pred = predict_recipe(spec, recipe, backend, profile)
                art = export(spec, backend, work, plan=recipe or None, validate=False)
                meas = bench(art.path, args.target, iterations=args.iterations).latency_ms["p50"]
                print(f"{name:8s} {backend:11s} {label:13s} {pred.latency_ms:9.2f} {meas:9.2f} "
                      f"{pred.latency_ms / meas:6.2f} {pred.size_bytes / 2**20:8.2f} "
                      f"{art.size_bytes / 2**20:8.2f}")


if __name__ == "__main__":
    main()
