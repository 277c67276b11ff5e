"""Planner and compression targets, measured (prints numbers and ratios; not a test).

1. minilm on raspberry-pi-zero-2w, --min-accuracy 0.99 --max-size-mb 25: the plan, then the
   fp32 and planned ExecuTorch artifacts: size ratio (target <= 25 %) and cosine to fp32 on
   the evaluation sentences (target >= 0.99; the planner only saw calibration sentences).
2. tiny-cnn int8 (static PT2E and dynamic) on ExecuTorch: top-1 agreement with fp32 on the
   128 evaluation images (target >= 98 %), plus how many distinct classes fp32 predicts.
3. tiny-lm: perplexity change per technique (host eager model, evaluation sequences).

Usage: .venv/bin/python benchmarks/planner_targets.py [--out DIR] [--skip-minilm]
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from edge.compress import (CompressContext, DistillConfig, EmbeddingQuantConfig,
                           FfnPruneConfig, Fp16Config, HeadPruneConfig, Int4WeightConfig,
                           Int8DynamicConfig, Int8StaticConfig, LowRankConfig, MagnitudePruneConfig,
                           apply)
from edge.evaluate import perplexity_of, score
from edge.exporter import export
from edge.models import load_model
from edge.planner import Constraints, make_plan
from edge.profiles import load_profile
from edge.validate import reference_outputs, run_artifact

MB = 1024 * 1024


def _first(outputs: list) -> list:
    return [o[0] if isinstance(o, (list, tuple)) else o for o in outputs]


def artifact_score(artifact, spec) -> float:
    """The spec's metric of an exported artifact vs the eager fp32 model on the eval inputs."""
    ref = _first(reference_outputs(spec))
    cand = _first(run_artifact(artifact, spec.eval_inputs))
    return score(spec.metric, ref, cand, spec.eval_inputs)


def minilm_target(out: Path) -> None:
    spec, profile = load_model("minilm"), load_profile("raspberry-pi-zero-2w")
    t0 = time.monotonic()
    plan = make_plan(spec, profile, Constraints(min_accuracy=0.99, max_size_mb=25))
    print(f"[minilm] plan in {time.monotonic() - t0:.0f} s: backend {plan.backend}, "
          f"groups {plan.groups}, structure {plan.structure}")
    print(f"[minilm] predicted {plan.predicted}")
    if plan.backend != "executorch":
        plan = make_plan(spec, profile, Constraints(min_accuracy=0.99, max_size_mb=25),
                         backends=["executorch"])
        print(f"[minilm] executorch-only plan: groups {plan.groups}, predicted {plan.predicted}")
    fp32 = export(spec, "executorch", out, validate=False)
    planned = export(spec, "executorch", out, plan=plan, validate=False)
    ratio = planned.size_bytes / fp32.size_bytes
    cosine = artifact_score(planned, spec)
    print(f"[minilm] fp32 .pte {fp32.size_bytes / MB:.2f} MB, planned .pte {planned.size_bytes / MB:.2f} MB "
          f"(predicted {plan.predicted['size_mb']} MB): ratio {ratio:.1%} (target <= 25%) "
          f"{'PASS' if ratio <= 0.25 else 'FAIL'}")
    print(f"[minilm] cosine to fp32 on {len(spec.eval_inputs)} eval sentences: {cosine:.4f} "
          f"(target >= 0.99) {'PASS' if cosine >= 0.99 else 'FAIL'}; planner's calibration "
          f"estimate {plan.predicted['accuracy']}")


def tiny_cnn_target(out: Path) -> None:
    spec = load_model("tiny-cnn")
    with torch.no_grad():
        classes = torch.cat([spec.model(*i) for i in spec.eval_inputs]).argmax(-1).unique().numel()
    print(f"[tiny-cnn] fp32 predicts {classes} distinct classes on {len(spec.eval_inputs)} eval images"
          + (" (top-1 agreement is trivially 1.0 for such a model)" if classes == 1 else ""))
    for config in (Int8StaticConfig(), Int8DynamicConfig()):
        art = export(spec, "executorch", out, plan=[config], validate=False)
        agree = artifact_score(art, spec)
        cos = score("cosine", _first(reference_outputs(spec)), _first(run_artifact(art, spec.eval_inputs)), [])
        print(f"[tiny-cnn] {config.label()} .pte {art.size_bytes / 1024:.1f} KB: top-1 agreement "
              f"{agree:.1%} (target >= 98%) {'PASS' if agree >= 0.98 else 'FAIL'}; logits cosine {cos:.5f}")


def tiny_lm_target() -> None:
    spec = load_model("tiny-lm")
    inputs = spec.eval_inputs
    with torch.no_grad():
        ref = [spec.model(*i).numpy() for i in inputs]
    base = perplexity_of(ref, inputs)
    print(f"[tiny-lm] fp32 perplexity {base:.3f} on {len(inputs)} eval sequences")
    configs = [Int8DynamicConfig(), Int4WeightConfig(group_size=32), EmbeddingQuantConfig(bits=8),
               EmbeddingQuantConfig(bits=4), Fp16Config(), MagnitudePruneConfig(sparsity=0.3),
               HeadPruneConfig(fraction=0.25), FfnPruneConfig(fraction=0.25), LowRankConfig(energy=0.95),
               DistillConfig(keep_layers=2)]
    for config in configs:
        for backend in ("executorch", "torchscript"):
            ctx = CompressContext("eager" if backend == "executorch" else backend, spec)
            try:
                model = apply(spec.fresh_model(), config, ctx)
            except Exception as exc:  # report and go on: this script measures, it does not gate
                print(f"[tiny-lm] {config.label():28s} {backend:11s} unsupported: {exc}")
                continue
            with torch.no_grad():
                batch = model(torch.cat([i[0] for i in inputs])).float()
                cand = [batch[k:k + 1].numpy() for k in range(len(inputs))]
            ppl = perplexity_of(cand, inputs)
            params = sum(p.numel() for p in model.parameters())
            print(f"[tiny-lm] {config.label():28s} {backend:11s} perplexity {ppl:.3f} "
                  f"({(ppl / base - 1):+.2%}), params {params}")
            if config.type_tag in ("magnitude_prune", "head_prune", "ffn_prune", "low_rank", "distill"):
                break  # structural: same eager model on every backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="artifact folder (default: a temporary one)")
    parser.add_argument("--skip-minilm", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out or tempfile.mkdtemp(prefix="edge-planner-bench-"))
    tiny_lm_target()
    tiny_cnn_target(out)
    if not args.skip_minilm:
        minilm_target(out)


if __name__ == "__main__":
    main()
