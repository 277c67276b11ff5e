"""How ExecuTorch's cached decoder graph is written, side by side: delegate calls and decode time.

Exports a SmolLM2-135M-shaped decoder (dim 576, 9/3 heads, FFN 1536, vocab 49152, context
``--context``; random weights, ``--layers`` layers, int4 g32 linears with int8 embedding and head,
or ``--recipe fp32``) four ways and times them interleaved in one process, one thread:

- ``landed``: ``edge.backends.executorch.CachedLlama`` as it is (RMSNorm's mean as a product
  with a row of ones, RoPE's rotation as slices and a concatenation);
- ``mean``: RMSNorm as the eager model writes it (a mean over the last dim, a portable op);
- ``rope-matmul``: RoPE's rotation as a product with a signed permutation matrix;
- ``attn-xnnpack``: attention without ``llama::custom_sdpa``: matrix products, a causal mask and
  a softmax over the whole cache, all in XNNPACK (which cannot take a length read from
  ``input_pos``: a slice of that length is an unbacked size, and XNNPACK refuses those), the
  caches laid out (KV heads, context, 1, head dim) so that each is one matrix per head.

Prints per variant the XNNPACK subgraphs and portable nodes (the manifest's delegation block),
and the median prefill (128 tokens) and decode-step times over ``--rounds`` rounds of 64 steps.

    .venv/bin/python benchmarks/executorch_llm_graph.py [--layers 4] [--recipe int4] [--rounds 12]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from edge.backends import executorch as et  # noqa: E402
from edge.compress import EmbeddingQuantConfig, Int4WeightConfig, Int8DynamicConfig  # noqa: E402
from edge.exporter import export  # noqa: E402
from edge.models.llama import Llama, LlamaConfig  # noqa: E402
from edge.models.lm import byte_encode, lm_spec  # noqa: E402

RECIPES = {"int4": [Int4WeightConfig(group_size=32, groups=("attention", "ffn")), EmbeddingQuantConfig(bits=8),
                    Int8DynamicConfig(groups=("head",))],
           "int8": [Int8DynamicConfig(groups=("attention", "ffn", "head")), EmbeddingQuantConfig(bits=8)],
           "fp32": None}


class MeanNorm(et.CachedLlama):
    def _norm(self, norm, x):
        return norm(x)


class RopeMatmul(et.CachedLlama):
    def __init__(self, llama):
        super().__init__(llama)
        d = llama.cfg.head_dim
        half = d // 2
        rotate = torch.zeros(d, d, dtype=self.cache_dtype)  # F.linear(x, rotate) = cat(-x2, x1)
        rotate[torch.arange(half), torch.arange(half) + half] = -1.0
        rotate[torch.arange(half) + half, torch.arange(half)] = 1.0
        self.register_buffer("rotate", rotate, persistent=False)

    def _rope(self, x, cos, sin):
        return x * cos + torch.nn.functional.linear(x, self.rotate) * sin


class AttnXnnpack(et.CachedLlama):
    def __init__(self, llama):
        super().__init__(llama)
        cfg = llama.cfg
        for i in range(cfg.layers):
            for kind in ("k", "v"):
                setattr(self, f"{kind}_cache_{i}", torch.zeros(cfg.kv_heads, cfg.context, 1, cfg.head_dim,
                                                               dtype=self.cache_dtype))
        self.register_buffer("positions", torch.arange(cfg.context), persistent=False)

    def forward(self, tokens, input_pos):
        m, cfg = self.llama, self.llama.cfg
        t, start, cos, sin = self._positions(tokens, input_pos)
        heads, kv, d, c = cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.context
        g = heads // kv
        future = self.positions[None, :] > (torch.arange(t) + start)[:, None]
        mask = torch.where(future, float("-inf"), 0.0).to(self.cache_dtype)[None, :, None, :]  # (1, t, 1, C)
        # every reshape writes the token dim as -1: XNNPACK takes a reshape with one inferred dim, not a symbolic one
        x = m.embed_tokens(tokens)
        for i, layer in enumerate(m.layers):
            attn, h = layer.attn, self._norm(layer.attn_norm, x)
            q = self._rope(attn.q_proj(h).view(1, -1, heads, d), cos, sin) * d ** -0.5
            k = self._rope(attn.k_proj(h).view(1, -1, kv, d), cos, sin)
            v = attn.v_proj(h).view(1, -1, kv, d)
            k_cache, v_cache = getattr(self, f"k_cache_{i}"), getattr(self, f"v_cache_{i}")
            torch.ops.llama.update_cache(k.view(-1, kv, 1, d).transpose(0, 1).contiguous(), k_cache, start)
            torch.ops.llama.update_cache(v.view(-1, kv, 1, d).transpose(0, 1).contiguous(), v_cache, start)
            qg = q.view(-1, kv, g, d).transpose(0, 1).reshape(kv, -1, d)  # (KV heads, t * group, D)
            scores = torch.bmm(qg, k_cache.view(kv, c, d).transpose(1, 2)).view(kv, -1, g, c) + mask
            p = torch.softmax(scores, dim=-1).view(kv, -1, c)
            out = torch.bmm(p, v_cache.view(kv, c, d)).view(kv, -1, g, d).transpose(0, 1)
            x = x + attn.o_proj(out.reshape(1, -1, heads * d))
            x = x + layer.ffn(self._norm(layer.ffn_norm, x))
        return m.lm_head(self._norm(m.norm, x[:, -1, :])).float()


VARIANTS = {"landed": et.CachedLlama, "mean": MeanNorm, "rope-matmul": RopeMatmul, "attn-xnnpack": AttnXnnpack}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="int4")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--only", nargs="+", choices=sorted(VARIANTS), help="these variants only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = LlamaConfig(layers=args.layers, rope_base=1e5, tie_embeddings=True, prefill_tokens=128, context=args.context,
                      vocab=49152, dim=576, heads=9, kv_heads=3, ffn=1536)

    def build():
        torch.manual_seed(0)
        return Llama(cfg).eval()

    from executorch.extension.pybindings import portable_lib

    et._import_llm_ops()
    from executorch.kernels import quantized  # noqa: F401  (the quantized embedding's kernels)

    original = et.CachedLlama
    methods = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cls in VARIANTS.items():
            if args.only and name not in args.only:
                continue
            spec = lm_spec(f"graph-{name}-{args.layers}", build(), byte_encode, "graph probe", "benchmark",
                           {"kind": "bytes", "bos_id": 0, "eos_ids": []}, build)
            et.CachedLlama = cls
            try:
                t0 = time.perf_counter()
                art = export(spec, "executorch", Path(tmp) / name, plan=RECIPES[args.recipe], use_cache=False,
                             validate=False)
            finally:
                et.CachedLlama = original
            d = art.manifest["delegation"]
            print(f"{name:12s} exported in {time.perf_counter() - t0:4.0f} s: {d['delegated_subgraphs']} XNNPACK "
                  f"subgraphs, {d['portable_nodes']} portable nodes", flush=True)
            methods[name] = portable_lib._load_for_executorch(str(art.path))
        prompt = torch.randint(0, cfg.vocab, (1, 128), generator=torch.Generator().manual_seed(0))
        times = {n: {"prefill": [], "decode": []} for n in methods}
        logits = {}  # name -> (prefill logits, last decode logits) of the first round
        for r in range(args.rounds):
            for name, m in methods.items():
                t0 = time.perf_counter()
                first = m.forward((prompt, torch.tensor([0])))[0]
                times[name]["prefill"].append(time.perf_counter() - t0)
                tok = torch.tensor([[5]])
                t0 = time.perf_counter()
                for i in range(64):
                    last = m.forward((tok, torch.tensor([128 + i])))[0]
                times[name]["decode"].append((time.perf_counter() - t0) / 64)
                if r == 0:
                    logits[name] = (first.clone(), last.clone())
    print(f"\n{args.layers} layers, {args.recipe}, 1 thread, {args.rounds} rounds interleaved (median [min-max]):")
    for name, t in times.items():
        pre, dec = [1e3 * x for x in t["prefill"]], [1e3 * x for x in t["decode"]]
        print(f"{name:12s} prefill {statistics.median(pre):6.1f} ms [{min(pre):.1f}-{max(pre):.1f}]  decode step "
              f"{statistics.median(dec):5.2f} ms [{min(dec):.2f}-{max(dec):.2f}]")
    base = next(iter(logits))
    for name, (first, last) in logits.items():  # the variants compute the same function
        diff = max(float((first - logits[base][0]).abs().max()), float((last - logits[base][1]).abs().max()))
        scale = float(logits[base][0].abs().max())
        print(f"{name:12s} logits vs {base}: max |diff| {diff:.2e} (logits up to {scale:.2f})")


if __name__ == "__main__":
    main()
