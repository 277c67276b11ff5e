"""What a decoder layer costs beyond its bytes, and what a cached byte costs by depth.

Two measurements behind `edge profiles calibrate --llm`'s ``decode_layers`` and ``decode_kv``
probes (edge/calibrate_decode.py), on the ``local`` target, one thread, 3 interleaved rounds,
median of the per-token decode p50:

- ``layers``: the calibration's decoder probe (SmolLM2's block, random weights) at the same
  bytes a token through two depths, the head narrowed as layers are added, per weight type; the
  time the extra layers add, per layer, is the cost a layer pays beyond its bytes (ExecuTorch by
  default: fp32 2 vs 10 layers at 160 MB a token, int8 and int4 4 vs 16 layers at 64 MB).
- ``kv``: the fp32 probe with a 128-, 512- and 2048-position cache, at 2 and 8 layers, on a
  backend whose step attends over the whole static cache (TorchScript by default); the time the
  longer cache adds over its extra bytes is the cache's marginal rate at each depth.

    .venv/bin/python benchmarks/decode_layer_cost.py [--part layers|kv|both] [--backend B] [--kv-backend B]

Exports go through the artifact cache (int8/int4 16-layer ExecuTorch probes: ~2.5 min each the
first time).
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.benchmark import bench  # noqa: E402
from edge.calibrate import export_probe  # noqa: E402
from edge.calibrate_decode import decoder_probes, read_and_flops  # noqa: E402

ROUNDS = 3
LAYER_CASES = [("fp32", 160.0, (2, 10)), ("int8", 64.0, (4, 16)), ("int4", 64.0, (4, 16))]
KV_CONTEXTS, KV_DEPTHS = (128, 512, 2048), (2, 8)


def timed(cases: list[tuple], backend: str) -> list[float]:
    """Median per-token p50 (ms) of each (label, probe) in ``cases``, measured round-robin."""
    out = Path(tempfile.mkdtemp(prefix="edge-bench-layers-"))
    paths = [export_probe(p, backend, out, None).path for _, p in cases]
    p50s: list[list[float]] = [[] for _ in cases]
    for _ in range(ROUNDS):
        for i, path in enumerate(paths):
            p50s[i].append(float(bench(path, "local", warmup=1, iterations=1, threads=1).latency_ms["p50"]))
    return [statistics.median(x) for x in p50s]


def layers_part(backend: str) -> None:
    for dtype, read_mb, depths in LAYER_CASES:
        probes = [next(p for p in decoder_probes(backend, read_mb, layers={dtype: d}) if p.name == f"decode_{dtype}")
                  for d in depths]
        ms = timed([(d, p) for d, p in zip(depths, probes)], backend)
        reads = [sum(read_and_flops(p, backend)[0].values()) for p in probes]
        for d, p, t, b in zip(depths, probes, ms, reads):
            print(f"{backend} {dtype}: {d} layers, vocab {p.vocab}: {b / 1e6:.1f} MB a token, {t:.2f} ms, "
                  f"{b / t / 1e6:.1f} GB/s", flush=True)
        (t1, b1, l1), (t2, b2, l2) = [(t, b, d) for d, t, b in zip(depths, ms, reads)]
        per_layer = (t2 - t1 * b2 / b1) / (l2 - l1 * b2 / b1)
        print(f"{backend} {dtype}: a layer beyond its bytes {per_layer:.3f} ms "
              f"({100 * (l2 - l1) * per_layer / t2:.0f} % of the {l2}-layer step)", flush=True)


def kv_part(backend: str) -> None:
    for depth in KV_DEPTHS:
        base = next(p for p in decoder_probes(backend, 64.0, layers={"fp32": depth}) if p.name == "decode_fp32")
        probes = [replace(base, name="decode_kv", context=c) for c in KV_CONTEXTS]
        ms = timed([(c, p) for c, p in zip(KV_CONTEXTS, probes)], backend)
        kv = [read_and_flops(p, backend)[0]["kv"] for p in probes]
        for c, t, b in zip(KV_CONTEXTS[1:], ms[1:], kv[1:]):
            print(f"{backend} {depth} layers, cache {c} vs {KV_CONTEXTS[0]} positions: +{(b - kv[0]) / 1e6:.2f} MB, "
                  f"+{t - ms[0]:.2f} ms: {(b - kv[0]) / ((t - ms[0]) * 1e6):.2f} GB/s a cached byte", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("layers", "kv", "both"), default="both")
    ap.add_argument("--backend", default="executorch", help="backend of the layers part")
    ap.add_argument("--kv-backend", default="torchscript", help="backend of the kv part (attends over the whole cache)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.part in ("layers", "both"):
        layers_part(args.backend)
    if args.part in ("kv", "both"):
        kv_part(args.kv_backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
