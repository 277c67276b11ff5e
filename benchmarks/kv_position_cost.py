"""What a decode step pays per cached position, on a real model: SmolLM2-135M decoding from three places.

The same artifact (benchmarks/llm.py's rows, exported through the artifact cache) decodes 64
tokens after a 16-token prompt (mean position 48), 64 after a 128-token prompt (160) and 320
after a 128-token prompt (288), one thread on the ``local`` target, ``--rounds`` interleaved
rounds, median of the per-token decode time. The growth per position is the cache's cost; the
cost model's charge for it is the cache's bytes a position (ExecuTorch: fp32 K and V; llama.cpp:
fp16) at the rate given (``--gbs``, a weight's decode rate on this host by default). llama.cpp
pads its cache view to 256 cells, but its flash attention (on for the default fp16 cache) skips
the cells past the filled ones: its growth follows the filled positions as ExecuTorch's does.

    .venv/bin/python benchmarks/kv_position_cost.py [--rounds 3] [--only executorch,llamacpp] [--gbs 25]
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.backends import get_backend  # noqa: E402
from edge.benchmark import bench  # noqa: E402
from edge.compress.kv_cache import KV_BYTES_PER_ELEMENT  # noqa: E402
from edge.exporter import export  # noqa: E402
from edge.models import load_model  # noqa: E402
from edge.planner.llm_cost import kv_cache_bytes  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from llm import VARIANTS  # noqa: E402

WINDOWS = [(16, 64), (128, 64), (128, 320)]  # (prompt tokens, new tokens)
ROWS = {("executorch", "int4"), ("executorch", "int8"), ("llamacpp", "Q4_0"), ("llamacpp", "Q8_0"),
        ("llamacpp", "planned")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="executorch,llamacpp")
    ap.add_argument("--gbs", type=float, default=25.0, help="the rate the cost model would charge a cached byte at")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    spec = load_model("smollm2-135m")
    cfg = spec.generation.config
    out = Path(tempfile.mkdtemp(prefix="edge-bench-kvpos-"))
    rows = [(b, label, export(spec, b, out, plan=recipe)) for b, label, recipe in VARIANTS
            if b in args.only.split(",") and any(b == rb and label.startswith(rl) for rb, rl in ROWS)]
    ms = {(label, b, w): [] for b, label, _ in rows for w in WINDOWS}
    for r in range(args.rounds):
        for b, label, art in rows:
            for prompt, new in WINDOWS:
                g = bench(art.path, "local", warmup=1, threads=1, prompt_tokens=prompt, new_tokens=new).generation
                ms[(label, b, (prompt, new))].append(1e3 / g["decode_tok_s"])
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    print(f"\nsmollm2-135m ({cfg.layers} layers, {cfg.kv_heads} KV heads of {cfg.head_dim}), one thread, "
          f"{args.rounds} rounds: ms a token (median [min-max]) by the decode's mean position")
    print("backend | variant | " + " | ".join(f"pos {p + n / 2:.0f}" for p, n in WINDOWS)
          + " | us a position, 48-288 (48-160 / 160-288) | charged at the cache's bytes")
    for b, label, _ in rows:
        be = get_backend(b)
        per_pos = kv_cache_bytes(cfg.layers, cfg.kv_heads, cfg.head_dim, 1, KV_BYTES_PER_ELEMENT[be.kv_cache_dtypes[0]])
        pos = [p + n / 2 for p, n in WINDOWS]
        med = [statistics.median(ms[(label, b, w)]) for w in WINDOWS]
        slopes = [(med[i + 1] - med[i]) / (pos[i + 1] - pos[i]) * 1e3 for i in range(len(WINDOWS) - 1)]
        cols = [f"{m:.2f} [{min(ms[(label, b, w)]):.2f}-{max(ms[(label, b, w)]):.2f}]" for m, w in zip(med, WINDOWS)]
        print(" | ".join([b, label, *cols, f"{(med[-1] - med[0]) / (pos[-1] - pos[0]) * 1e3:.1f} "
                          f"({' / '.join(f'{x:.1f}' for x in slopes)})",
                          f"{per_pos / 1e3:.1f} KB: {per_pos / (args.gbs * 1e3):.2f} us at {args.gbs:g} GB/s"]))
    print(f"artifacts in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
