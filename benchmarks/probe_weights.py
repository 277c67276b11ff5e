"""Does decode speed depend on the weights' values? A trained model against random decoders of its shapes.

``edge profiles calibrate --llm`` times synthetic decoders with random weights
(edge/calibrate_decode.py). A runtime whose cost depends on the values would make those probes
read faster (or slower) than a trained model of the same shapes, types and bytes. This script
measures that on the ``local`` target for ``--backend`` (default llamacpp), one thread,
``--rounds`` interleaved rounds, median of the per-token decode p50:

- ``trained``: SmolLM2-135M at the planner's llama.cpp types (Q4_1 attention and FFN, Q8_0 tied
  embedding), or ``--recipe q4_0|q8_0`` for llama.cpp's whole-file types;
- ``trained, blocks shuffled``: the same file with each tensor's quantized blocks shuffled (the
  same scales and values, in another order; llama.cpp only);
- ``random, normal``: a decoder of SmolLM2's shapes (tied embedding, its context and prompt)
  with normal weights of std 0.02, as the probes had before;
- ``random, trained-like``: the same decoder with the probes' weights now
  (``edge.calibrate_decode.trained_like_``: scales spread per matrix and per row).

For a GGUF it also prints how many 64-byte lines of ggml's fp16 -> fp32 lookup table (256 KB;
the prebuilt CPU library converts every block's fp16 scale through it) the file's block scales
touch (the measure the trained-like weights were sized to match) and how far the median block
scale moves from tensor to tensor.

    .venv/bin/python benchmarks/probe_weights.py [--rounds 8] [--recipe planned|q4_0|q8_0]
"""
from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edge.artifact import Artifact, load_artifact, sha256_file  # noqa: E402
from edge.benchmark import bench  # noqa: E402
from edge.calibrate_decode import random_decoder, trained_like_  # noqa: E402
from edge.compress import EmbeddingQuantConfig, Int4WeightConfig, Int8DynamicConfig  # noqa: E402
from edge.exporter import export  # noqa: E402
from edge.models import load_model  # noqa: E402

RECIPES = {"planned": [Int4WeightConfig(group_size=32, groups=("attention", "ffn")), EmbeddingQuantConfig(bits=8)],
           "q4_0": [Int4WeightConfig(group_size=32)], "q8_0": [Int8DynamicConfig()]}


SCALE_BYTES = {"Q4_0": 2, "Q8_0": 2, "Q4_1": 4}  # types whose blocks open with an fp16 scale (Q4_1: and a minimum)


def _blocks(path: Path, mode: str = "r"):
    """(the reader, a tensor's blocks as rows of bytes, the bytes of fp16 scales each block opens
    with, its type) for every tensor of a type in SCALE_BYTES."""
    from gguf import GGUFReader
    from gguf.constants import GGML_QUANT_SIZES

    reader = GGUFReader(path, mode=mode)
    for t in reader.tensors:
        if t.tensor_type.name in SCALE_BYTES:
            _, type_bytes = GGML_QUANT_SIZES[t.tensor_type]
            yield reader, t.data.view(np.uint8).reshape(-1, type_bytes), SCALE_BYTES[t.tensor_type.name], t.tensor_type.name


def scale_stats(path: Path) -> tuple[int, dict[str, tuple[float, float]]]:
    """64-byte lines of a 65,536-entry fp32 table the file's fp16 block scales (and minimums) index,
    and per type the lowest and highest per-tensor median log2 of the blocks' scales."""
    lines, medians = set(), {}
    for _, blocks, scales, qtype in _blocks(path):
        halves = np.ascontiguousarray(blocks[:, :scales]).view(np.uint16)
        lines.update(np.unique(halves >> 4).tolist())
        log2 = np.log2(np.abs(halves[:, 0].view(np.float16).astype(np.float32)) + 1e-30)
        medians.setdefault(qtype, []).append(float(np.median(log2)))
    return len(lines), {t: (min(m), max(m)) for t, m in medians.items()}


def shuffled_copy(art: Artifact, out: Path) -> Artifact:
    """The artifact with each quantized tensor's blocks in a random order (seed 0), its manifest's
    sha256 and size rewritten for the new bytes."""
    dst = out / f"{art.path.parent.name}-blocks-shuffled"
    shutil.copytree(art.path.parent, dst)
    gguf = dst / art.path.name
    rng = np.random.default_rng(0)
    reader = None
    for reader, blocks, _, _ in _blocks(gguf, mode="r+"):
        blocks[:] = blocks[rng.permutation(blocks.shape[0])]
    if reader is not None:
        reader.data.flush()
        del reader
    art = load_artifact(dst, verify=False)  # the manifest still names the bytes before the shuffle
    art.manifest.update(sha256=sha256_file(gguf), size_bytes=gguf.stat().st_size)
    art.write_manifest()
    return load_artifact(dst)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="llamacpp")
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="planned")
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    out = Path(tempfile.mkdtemp(prefix="edge-bench-weights-"))
    recipe = RECIPES[args.recipe]
    spec = load_model("smollm2-135m")
    cfg = spec.model.cfg
    arts = [("trained", export(spec, args.backend, out, plan=recipe))]
    if arts[0][1].path.suffix == ".gguf":
        arts.append(("trained, blocks shuffled", shuffled_copy(arts[0][1], out)))
    for label, fill in (("random, normal", lambda p: p.normal_(0.0, 0.02)), ("random, trained-like", trained_like_)):
        spec_r = random_decoder(cfg, "decoder-" + label.split(", ")[1], f"SmolLM2's shapes, {label} weights", fill)
        arts.append((label, export(spec_r, args.backend, out, plan=recipe, validate=False)))
    p50s: dict[str, list[float]] = {label: [] for label, _ in arts}
    for _ in range(args.rounds):
        for label, art in arts:
            p50s[label].append(float(bench(art.path, "local", warmup=1, iterations=1, threads=1).latency_ms["p50"]))
    base = statistics.median(p50s["trained"])
    print(f"{args.backend} {args.recipe}, SmolLM2-135M's shapes, {args.rounds} rounds, decode p50 per token:")
    for label, art in arts:
        ms = statistics.median(p50s[label])
        lines = ""
        if art.path.suffix == ".gguf":
            n, ranges = scale_stats(art.path)
            lines = f", {n} table lines; per-tensor median scale " + ", ".join(
                f"{t} 2^{lo:.1f}..2^{hi:.1f}" for t, (lo, hi) in sorted(ranges.items()))
        print(f"  {label:26s} {art.size_bytes / 1e6:6.1f} MB  {ms:6.2f} ms [{min(p50s[label]):.2f}-"
              f"{max(p50s[label]):.2f}]  {ms / base:.3f}x trained{lines}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
