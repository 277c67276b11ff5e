"""Quantization quality on SmolLM2 moved off the grid it was shipped on.

The ``smollm2-135m`` reference is the shipped Q4_1 GGUF dequantized to fp32, so its weights hold
exactly 16 values per block of 32: re-quantizing to Q4_1 returns them unchanged, and any 4-bit figure
on it may flatter a format that shares that grid. This builds the same function with its weights
off every grid by permuting channels, which a trained model's function does not depend on: the
residual stream's channels (the embedding's and the norms' weights, the columns of q/k/v/gate/up,
the rows of o/down), the FFN's hidden channels (gate/up rows, down columns) and, per KV head, the
value channels (value rows and the output-projection columns that read them). No weight changes
value, so the weights' distribution is the shipped one, but each block of 32 now draws its weights
from 32 different shipped blocks. (Rescaling channels instead, with norms compensating, leaves the
weights near the old grid: re-quantizing snaps them back and strands the compensation.)

Prints the Q4_1 round-trip error of the linear weights in units of each block's step (0 on the
grid; about 0.25 off it), and for each recipe the perplexity on the evaluation text (exported
through edge and validated on the host like every artifact) of the shipped reference and of the
permuted one, each against its own fp32. With ``--plan`` it also plans the permuted model for
``raspberry-pi-5-8gb`` with ``--backends llamacpp --max-ppl-increase 5``, as the README's planned
row was chosen for the shipped one, exports that plan and prints its size and perplexity.

    .venv/bin/python benchmarks/offgrid_quality.py [--seed 0] [--only llamacpp] [--plan]
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edge.exporter import export  # noqa: E402
from edge.models import load_model  # noqa: E402
from llm import VARIANTS  # noqa: E402  (beside this file: the same recipes)

# benchmarks/llm.py's quantized rows of these two backends (its "planned" row: what the planner chose
# for the shipped model)
RECIPES = [(backend, label, recipe) for backend, label, recipe in VARIANTS
           if backend in ("llamacpp", "executorch") and recipe is not None]


def off_grid(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The same function with its channels permuted (see the module docstring), in place."""
    gen = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    group = cfg.heads // cfg.kv_heads
    with torch.no_grad():
        res = torch.randperm(cfg.dim, generator=gen)  # the residual stream
        model.embed_tokens.weight.copy_(model.embed_tokens.weight[:, res])
        if model.lm_head.weight is not model.embed_tokens.weight:
            model.lm_head.weight.copy_(model.lm_head.weight[:, res])
        model.norm.weight.copy_(model.norm.weight[res])
        for layer in model.layers:
            attn, ffn = layer.attn, layer.ffn
            for norm in (layer.attn_norm, layer.ffn_norm):
                norm.weight.copy_(norm.weight[res])
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj, ffn.gate_proj, ffn.up_proj):
                proj.weight.copy_(proj.weight[:, res])
            for proj in (attn.o_proj, ffn.down_proj):
                proj.weight.copy_(proj.weight[res, :])
            hidden = torch.randperm(cfg.ffn, generator=gen)
            for proj in (ffn.gate_proj, ffn.up_proj):
                proj.weight.copy_(proj.weight[hidden, :])
            ffn.down_proj.weight.copy_(ffn.down_proj.weight[:, hidden])
            d = cfg.head_dim  # value channels, per KV head; query head h reads KV head h // group
            within = [torch.randperm(d, generator=gen) + h * d for h in range(cfg.kv_heads)]
            value = torch.cat(within)
            attn.v_proj.weight.copy_(attn.v_proj.weight[value, :])
            if attn.v_proj.bias is not None:
                attn.v_proj.bias.copy_(attn.v_proj.bias[value])
            cols = torch.cat([within[h // group] - (h // group) * d + h * d for h in range(cfg.heads)])
            attn.o_proj.weight.copy_(attn.o_proj.weight[:, cols])
    return model


def q4_1_error(model: torch.nn.Module) -> float:
    """Mean |w - Q4_1(w)| over the attention and FFN weights, in units of each block's step."""
    errs = []
    for layer in model.layers:
        for proj in (layer.attn.q_proj, layer.attn.k_proj, layer.attn.v_proj, layer.attn.o_proj,
                     layer.ffn.gate_proj, layer.ffn.up_proj, layer.ffn.down_proj):
            w = proj.weight.detach().double().reshape(-1, 32).numpy()
            lo, hi = w.min(axis=1, keepdims=True), w.max(axis=1, keepdims=True)
            step = np.where(hi > lo, (hi - lo) / 15, 1.0)
            errs.append(np.abs((w - lo) / step - np.round((w - lo) / step)).mean())
    return float(np.mean(errs))


def offgrid_spec(spec, seed: int):
    moved = copy.copy(spec)
    moved.name = f"{spec.name}-permuted-{seed}"
    moved.rebuild = lambda: off_grid(spec.fresh_model(), seed)
    moved.model = moved.rebuild().eval()
    return moved


def perplexity_of(art) -> tuple[float, float, int]:
    val = art.manifest["validation"]
    return val["ppl_candidate"], val["ppl_reference"], art.path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", help="comma-separated backends")
    ap.add_argument("--plan", action="store_true", help="also plan the off-grid model for llama.cpp at +5 %%")
    args = ap.parse_args()
    torch.set_num_threads(1)
    spec = load_model(args.model)
    moved = offgrid_spec(spec, args.seed)
    with torch.no_grad():
        a = spec.model.eval()(*spec.eval_inputs[0])
        b = moved.model(*spec.eval_inputs[0])
    rel = float((a - b).abs().max() / a.abs().max())
    print(f"{moved.name}: max |logit difference| {rel:.1e} of the largest logit; Q4_1 round-trip error of the "
          f"linear weights {q4_1_error(spec.model):.3f} step (shipped) -> {q4_1_error(moved.model):.3f} step "
          "(permuted)", flush=True)
    out = Path(tempfile.mkdtemp(prefix="edge-offgrid-"))
    rows = []
    for backend, label, recipe in RECIPES:
        if args.only and backend not in args.only.split(","):
            continue
        cells = []
        for s in (spec, moved):
            t0 = time.perf_counter()
            try:
                art = export(s, backend, out / s.name, plan=recipe)
            except Exception as exc:  # a failed export is a result too
                print(f"{backend} {label} ({s.name}): export failed: {str(exc).splitlines()[0][:300]}", flush=True)
                cells.append(None)
                continue
            cells.append(perplexity_of(art))
            print(f"{backend} {label} ({s.name}): exported in {time.perf_counter() - t0:.0f} s", flush=True)
        rows.append((backend, label, cells))
    print(f"\nperplexity on the evaluation text, each against its own fp32 (permutation seed {args.seed}):")
    fp32_bytes = 4 * sum(p.numel() for p in {id(p): p for p in spec.model.parameters()}.values())
    print(f"{'backend':11s} {'recipe':70s} {'x fp32':>7s} {'shipped (Q4_1 grid)':>22s} {'permuted':>22s}")
    for backend, label, cells in rows:
        text = [f"{c[0]:.2f} ({100 * (c[0] / c[1] - 1):+.1f} %)" if c else "failed" for c in cells]
        size = next((f"{c[2] / fp32_bytes:.3f}" for c in cells if c), "-")
        print(f"{backend:11s} {label[:70]:70s} {size:>7s} {text[0]:>22s} {text[1]:>22s}")
    if args.plan:
        from edge.errors import EdgeError
        from edge.planner import Constraints, make_plan
        from edge.profiles import load_profile

        print(f"\nplanning {moved.name} for raspberry-pi-5-8gb, llamacpp, +5 % perplexity:", flush=True)
        try:
            plan = make_plan(moved, load_profile("raspberry-pi-5-8gb"), Constraints(min_accuracy=1 / 1.05),
                             backends=["llamacpp"])
        except EdgeError as exc:
            print(f"no plan: {exc}")
            return
        accuracy = plan.predicted["accuracy"]  # fp32 perplexity / the plan's, on the calibration text
        print(f"{plan.tag}: predicted size {plan.predicted.get('size_mb')} MB "
              f"({plan.predicted['size_bytes'] / fp32_bytes:.3f}x fp32), accuracy {accuracy} "
              f"(perplexity {100 * (1 / accuracy - 1):+.1f} %; {plan.accuracy_basis})")
        for reason in plan.reasons:
            print("  -", reason)
        art = export(moved, plan.backend, out / moved.name, plan=plan)
        ppl, ref, size = perplexity_of(art)
        print(f"the plan exported: {size / 1e6:.1f} MB ({size / fp32_bytes:.3f}x fp32), perplexity {ppl:.2f} "
              f"({100 * (ppl / ref - 1):+.1f} %) on the evaluation text")


if __name__ == "__main__":
    main()
