"""Where an ExecuTorch language model's decode step spends its time: an ETDump profile, per op.

Exports ``--model`` (default smollm2-135m) for ExecuTorch with ``--recipe`` (int4: int4 g32
linears with int8 embedding and head, the equal-bits row of benchmarks/llm.py; int8; fp32)
through the artifact cache, or takes ``--artifact DIR``; loads the ``.pte`` with ETDump on,
one thread, prefills ``--prompt`` tokens and decodes ``--new`` tokens (greedy), then groups the
profile's events by name (XNNPACK's own per-operator events included) and prints, per event,
the calls and milliseconds per decoded token (median over the steps) and its share of the step.

    .venv/bin/python benchmarks/executorch_decode_profile.py [--recipe int4] [--prompt 128] [--new 64]
"""
from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from executorch_llm_graph import RECIPES  # noqa: E402  (beside this file: the same recipes)
WHOLE_STEP = ("Method::execute", "Program::load_method", "Method::init")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="int4")
    ap.add_argument("--artifact", help="an exported ExecuTorch language-model artifact directory instead")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from edge.artifact import load_artifact
    from edge.runner import runner as base

    from edge.models import load_model

    spec = load_model(args.model)
    if args.artifact:
        art = load_artifact(args.artifact)
    else:
        from edge.exporter import export

        art = export(spec, "executorch", Path(tempfile.mkdtemp(prefix="edge-et-profile-")), plan=RECIPES[args.recipe])
    prompt = [int(t) for t in base.load_inputs(None, str(art.path))[0].reshape(-1)][:args.prompt]
    base._set_executorch_threads(1)
    base._register_quantized_kernels()
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
    from executorch.devtools import Inspector
    from executorch.extension.pybindings import portable_lib

    module = portable_lib._load_for_executorch(str(art.path), enable_etdump=True, debug_buffer_size=0)

    def step(ids, pos):
        out = module.run_method("forward", (torch.tensor([ids], dtype=torch.long), torch.tensor([pos], dtype=torch.long)))
        return int(out[0].reshape(-1, out[0].shape[-1])[-1].argmax())

    token = step(prompt, 0)
    t0 = time.perf_counter()
    for i in range(args.new):
        token = step([token], len(prompt) + i)
    wall_ms = (time.perf_counter() - t0) * 1e3 / args.new
    out = Path(tempfile.mkdtemp(prefix="edge-etdump-"))
    module.write_etdump_result_to_file(str(out / "run.etdp"), str(out / "debug.bin"))
    inspector = Inspector(etdump_path=str(out / "run.etdp"))
    per_step = collections.defaultdict(lambda: [0.0] * args.new)  # name -> ms in each decode step
    calls = collections.Counter()
    for block in inspector.event_blocks:
        for ev in block.events:
            raw = ev.perf_data.raw if ev.perf_data is not None else []
            if len(raw) != args.new + 1:  # not one timing per forward call (load, init)
                continue
            calls[ev.name] += 1
            for i, ms in enumerate(raw[1:]):  # raw[0]: the prefill
                per_step[ev.name][i] += ms
    step_ms = statistics.median(per_step["Method::execute"]) if "Method::execute" in per_step else wall_ms
    print(f"{art.path} ({art.manifest['compression'].get('recipe')}): decode {wall_ms:.2f} ms a token by the clock "
          f"(ETDump on), {step_ms:.2f} ms in Method::execute (median of {args.new} steps from position {len(prompt)})")
    print(f"{'event':66s} {'calls/step':>10s} {'ms/token':>9s} {'share':>6s}")
    rows = sorted(((statistics.median(v), name) for name, v in per_step.items() if name not in WHOLE_STEP), reverse=True)
    for ms, name in rows[:25]:
        print(f"{name[:66]:66s} {calls[name]:10d} {ms:9.3f} {100 * ms / step_ms:5.1f}%")
    print("(DELEGATE_CALL and OPERATOR_CALL hold the XNNPACK and portable events below them; shares overlap)")
    if "DELEGATE_CALL" in per_step:
        gemm = sum(statistics.median(v) for name, v in per_step.items() if "GEMM" in name)
        print(f"inside the delegate calls beyond their matrix products: "
              f"{statistics.median(per_step['DELEGATE_CALL']) - gemm:.3f} ms a token")
    for label, kind, nbytes in weight_streams(spec.model, art.manifest["compression"]):
        ms = sum(statistics.median(v) for name, v in per_step.items() if kind in name)
        if ms > 0 and nbytes:
            print(f"{label}: {nbytes / 1e6:.1f} MB of weights in {ms:.3f} ms a token: {nbytes / ms / 1e6:.1f} GB/s")
    return 0


def weight_streams(model, compression) -> list[tuple[str, str, int]]:
    """(label, XNNPACK kernel tag, bytes its weights take as XNNPACK packs them) per quantized weight kind.

    int4 group-wise (``QB4W``): 4 bits a weight and a bf16 scale a group; int8 per channel
    (``QC8W``): a byte a weight and an fp32 scale a row. The ms are the profile's events of that tag.
    """
    from edge.compress.groups import layer_groups

    modules = dict(model.named_modules())
    recipe = (compression or {}).get("recipe") or []
    out = []
    for config in recipe:
        kind = config.get("type")
        if kind not in ("int4_weight", "int8_dynamic"):
            continue
        names = [n for g in (config.get("groups") or ()) for n in layer_groups(model).get(g, [])]
        weights = [modules[n].weight for n in names]
        if kind == "int4_weight":
            group = int(config.get("group_size") or 32)
            nbytes = sum(w.numel() // 2 + 2 * w.numel() // group for w in weights)
            out.append((f"int4 g{group} ({', '.join(config['groups'])})", "QB4W", nbytes))
        else:
            nbytes = sum(w.numel() + 4 * w.shape[0] for w in weights)
            out.append((f"int8 per channel ({', '.join(config['groups'])})", "QC8W", nbytes))
    return out


if __name__ == "__main__":
    sys.exit(main())
