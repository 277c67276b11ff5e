"""Export time per backend per zoo model: cold (fresh artifact cache) vs cached, and the ratio.

Usage: python benchmarks/export.py [--models tiny-mlp,tiny-cnn,tiny-lm,minilm] [--backends all]

Cold includes conversion and host validation; cached is a re-export of the same model
from the content-addressed cache (a copy/link, no conversion). Model loading is excluded.
minilm's TFLite conversion alone takes minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.backends import BACKENDS  # noqa: E402
from edge.exporter import export  # noqa: E402
from edge.models import ZOO, load_model  # noqa: E402


def measure(model: str, backend: str, root: Path) -> tuple[float, float, int]:
    spec = load_model(model)
    cache = root / "cache"
    start = time.perf_counter()
    art = export(spec, backend, root / "cold", cache_dir=cache)
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    again = export(spec, backend, root / "cached", cache_dir=cache)
    cached_s = time.perf_counter() - start
    assert again.manifest["cache_hit"] and again.sha256 == art.sha256
    return cold_s, cached_s, art.size_bytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ZOO))
    parser.add_argument("--backends", default="all")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    backends = list(BACKENDS) if args.backends == "all" else args.backends.split(",")
    print(f"{'model':10} {'backend':12} {'size_MB':>8} {'cold_s':>8} {'cached_s':>9} {'cold/cached':>12}")
    for model in args.models.split(","):
        for backend in backends:
            with tempfile.TemporaryDirectory(prefix="edge-bench-export-") as tmp:
                cold_s, cached_s, size = measure(model, backend, Path(tmp))
            print(f"{model:10} {backend:12} {size / 1e6:8.2f} {cold_s:8.2f} {cached_s:9.3f} "
                  f"{cold_s / max(cached_s, 1e-9):11.0f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
