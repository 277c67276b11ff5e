"""onnx2tf's memory and time when the tflite backend converts a decoder's step, by size.

Converts SmolLM2-135M-shaped decoders (dim 576, 9/3 heads, FFN 1536, vocab 49152, tied
embedding; random weights) with 1 and 3 layers, and a decoder of a few kB (TensorFlow's own
share), each through the real exporter in a fresh process,
and reads the conversion's peak RSS from the kernel (the largest child's ru_maxrss). Fits

    peak = base + per_embedding_byte x embedding bytes + per_layer_byte x layer bytes

and prints it next to what `edge.backends.tflite` assumes when it refuses a conversion up
front, and what the fit says SmolLM2-135M (30 layers) needs.

    .venv/bin/python benchmarks/tflite_convert_memory.py [--layers 1,3]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SMOLLM2 = dict(vocab=49152, dim=576, heads=9, kv_heads=3, ffn=1536)
TINY = dict(vocab=256, dim=64, heads=4, kv_heads=2, ffn=128)


def one(layers: int, shape: dict) -> dict:
    import torch

    from edge.exporter import export
    from edge.models.llama import Llama, LlamaConfig
    from edge.models.lm import byte_encode, lm_spec

    cfg = LlamaConfig(layers=layers, rope_base=1e5, tie_embeddings=True, prefill_tokens=16, context=64, **shape)

    def build():
        torch.manual_seed(0)
        return Llama(cfg).eval()

    model = build()
    spec = lm_spec(f"convert-memory-{layers}x{cfg.dim}-v{cfg.vocab}", model, byte_encode, "onnx2tf memory probe", "benchmark",
                   {"kind": "bytes", "bos_id": 0, "eos_ids": []}, build)
    embedding = model.embed_tokens.weight.numel() * 4
    total = sum(p.numel() * 4 for p in {id(p): p for p in model.parameters()}.values())
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        art = export(spec, "tflite", out, use_cache=False, validate=False)
        seconds = time.perf_counter() - start
        size = art.path.stat().st_size
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # onnx2tf's process (KB on Linux)
    return {"layers": layers, "vocab": cfg.vocab, "embedding_bytes": embedding, "layer_bytes": total - embedding,
            "peak_bytes": peak, "seconds": seconds, "tflite_bytes": size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", default="1,3", help="two layer counts at SmolLM2's shape")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        layers, shape = args.one.split(",", 1)
        print(json.dumps(one(int(layers), json.loads(shape))))
        return

    from edge.backends import tflite

    few, more = (int(n) for n in args.layers.split(","))
    runs = []
    for layers, shape in ((1, TINY), (few, SMOLLM2), (more, SMOLLM2)):
        proc = subprocess.run([sys.executable, __file__, "--one", f"{layers},{json.dumps(shape)}"],
                              capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"conversion of {layers} layers of {shape} failed:\n{proc.stderr[-2000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        runs.append(r)
        print(f"layers {layers:2d} dim {shape['dim']:3d} vocab {shape['vocab']:5d}: embedding "
              f"{r['embedding_bytes'] / 1e6:6.1f} MB, layers {r['layer_bytes'] / 1e6:5.1f} MB -> onnx2tf peak RSS "
              f"{r['peak_bytes'] / 1e9:5.2f} GB, {r['seconds']:4.0f} s, .tflite {r['tflite_bytes'] / 1e6:.1f} MB",
              flush=True)
    base, a, b = runs
    per_layer = (b["peak_bytes"] - a["peak_bytes"]) / (b["layer_bytes"] - a["layer_bytes"])
    per_emb = (a["peak_bytes"] - base["peak_bytes"] - per_layer * a["layer_bytes"]) / a["embedding_bytes"]
    layer_s = (b["seconds"] - a["seconds"]) / (b["layers"] - a["layers"])
    print(f"fit: base {base['peak_bytes'] / 1e9:.2f} GB + {per_emb:.0f} x the tied embedding's bytes ({per_emb / 2:.0f} x "
          f"each as the gather and as the head's matmul) + {per_layer:.0f} x the layers' bytes; {layer_s:.0f} s a layer")
    emb, layers30 = a["embedding_bytes"], 30 * a["layer_bytes"] / a["layers"]
    fitted = base["peak_bytes"] + per_emb * emb + per_layer * layers30
    seconds30 = a["seconds"] + (30 - a["layers"]) * layer_s
    print(f"SmolLM2-135M (30 layers, {(emb + layers30) / 1e6:.0f} MB): the fit says {fitted / 1e9:.1f} GB and "
          f"{seconds30 / 60:.0f} min; edge.backends.tflite assumes {tflite.conversion_bytes(2 * emb, layers30) / 1e9:.1f} GB in one piece "
          "(the tied table converted twice: a gather and the head's matmul)")


if __name__ == "__main__":
    main()
