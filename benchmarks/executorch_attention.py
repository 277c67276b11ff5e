"""What ExecuTorch's attention kernels cost per call, by cache type and position, on one thread.

The ExecuTorch language-model artifacts attend with ``llama::custom_sdpa`` over an fp32 cache
(``edge.backends.executorch.CachedLlama``); its calls are about a quarter of SmolLM2's int4
decode step (benchmarks/executorch_decode_profile.py). This times the kernels a faster cache could
use, on SmolLM2-135M's attention shape (9 query heads, 3 KV heads, head dim 64, context 512),
decoding one token at ``--positions``:

- ``fp32``, ``bf16``, ``fp16``: ``llama::custom_sdpa`` with query and cache of that type;
- ``int8``: ``llama::custom_quantized_sdpa`` over an int8 cache with per-token scales (the layout
  of ExecuTorch's quantized KV cache).

One thread for torch and for ExecuTorch's threadpool (the kernels' parallel_for), rounds
interleaved; prints the median microseconds a call [min-max], the slope per cached position, and
the rate the cache is read at the last position (its K and V bytes up to there over the call's time).

    .venv/bin/python benchmarks/executorch_attention.py [--positions 32 160 400] [--rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def kernels(heads: int, kv_heads: int, head_dim: int, context: int) -> dict:
    gen = torch.Generator().manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen)

    q, k, v = rnd(1, 1, heads, head_dim), rnd(1, context, kv_heads, head_dim), rnd(1, context, kv_heads, head_dim)
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        qd, kd, vd = q.to(dtype), k.to(dtype), v.to(dtype)
        out[name] = lambda pos, qd=qd, kd=kd, vd=vd: torch.ops.llama.custom_sdpa(qd, kd, vd, pos, None, 0, True)

    def quantize(x):  # per token (last dim) asymmetric int8, as ExecuTorch's quantized KV cache stores it
        scale, zero = torch.ops.quantized_decomposed.choose_qparams_per_token_asymmetric.default(x, torch.int8)
        qx = torch.ops.quantized_decomposed.quantize_per_token(x, scale, zero, -128, 127, torch.int8)
        return qx, scale.float(), zero.to(torch.int8)

    (q8, qs, qz), (k8, ks, kz), (v8, vs, vz) = quantize(q), quantize(k), quantize(v)
    out["int8"] = lambda pos: torch.ops.llama.custom_quantized_sdpa(q8, k8, v8, pos, None, 0, True, None,
                                                                    qz, qs, kz, ks, vz, vs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--positions", type=int, nargs="+", default=[32, 160, 400])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--heads", type=int, default=9)
    ap.add_argument("--kv-heads", type=int, default=3)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--context", type=int, default=512)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  registers llama::*
    import executorch.kernels.quantized  # noqa: F401  quantized_decomposed::*
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(1)  # the kernels' parallel_for runs on ExecuTorch's threadpool
    fns = kernels(args.heads, args.kv_heads, args.head_dim, args.context)
    times = {(name, pos): [] for name in fns for pos in args.positions}
    for _ in range(args.rounds):
        for pos in args.positions:
            for name, fn in fns.items():
                for _ in range(20):
                    fn(pos)
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    fn(pos)
                times[(name, pos)].append((time.perf_counter() - t0) / args.calls * 1e6)
    print(f"one decode step's attention, {args.heads}/{args.kv_heads} heads, head dim {args.head_dim}, context "
          f"{args.context}, 1 thread, {args.rounds} rounds of {args.calls} calls (us a call, median [min-max]):")
    print(f"{'cache':6s}" + "".join(f"{'pos ' + str(p):>22s}" for p in args.positions) + f"{'us / position':>16s}{'GB/s at pos ' + str(max(args.positions)):>18s}")
    lo, hi = min(args.positions), max(args.positions)
    size = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}
    for name in fns:
        cells = []
        for pos in args.positions:
            t = times[(name, pos)]
            cells.append(f"{statistics.median(t):8.1f} [{min(t):.1f}-{max(t):.1f}]")
        slope = (statistics.median(times[(name, hi)]) - statistics.median(times[(name, lo)])) / max(hi - lo, 1)
        kv_bytes = 2 * (hi + 1) * args.kv_heads * args.head_dim * size[name]
        rate = kv_bytes / statistics.median(times[(name, hi)]) / 1e3
        print(f"{name:6s}" + "".join(f"{c:>22s}" for c in cells) + f"{slope:16.3f}{rate:18.1f}")


if __name__ == "__main__":
    main()
