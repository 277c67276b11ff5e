"""`edge deploy`, `edge bench`."""
from __future__ import annotations

import argparse

from ..defaults import ITERATIONS as DEFAULT_ITERATIONS, TIMEOUT_S as DEFAULT_TIMEOUT_S, WARMUP as DEFAULT_WARMUP
from .common import Output, add_device_wait_option, add_target_options, command, given, render_table


def _deploy(args: argparse.Namespace) -> Output:
    from ..benchmark import deploy

    info = deploy(args.artifact, args.target, args.targets_file, args.trust_new_host)
    rows = [{"file": k, "remote_path": f["remote_path"],
             "pushed": "unchanged" if f["skipped"] else f"{f['bytes_sent']} bytes"}
            for k, f in info["files"].items()]
    text = render_table(rows, ["file", "remote_path", "pushed"])
    return Output(info, text + f"\ndeployed to {info['target']}:{info['remote_dir']} "
                               f"({info['bytes_sent']} bytes sent)")


def _bench(args: argparse.Namespace) -> Output:
    from ..benchmark import bench

    result = bench(args.artifact, args.target, threads=args.threads, targets_file=args.targets_file,
                   trust_new_host=args.trust_new_host, prompt_tokens=args.prompt_tokens,
                   new_tokens=args.new_tokens, **given(args, "warmup", "iterations"),
                   **({"timeout_s": args.timeout} if args.timeout is not None else {}),
                   **({"device_wait_s": args.device_wait} if args.device_wait is not None else {}))
    note = _emulated_note(args.target, args.targets_file)
    if result.generation:
        return Output(result.to_dict(), _generation_lines(result) + note)
    lat = result.latency_ms
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}" if v >= 1 else f"{v:.3g}"  # noqa: E731
    ctx = result.context
    lines = [f"{result.backend} on {result.target}: {result.runtime} {result.runtime_version or ''}, "
             f"threads {result.threads or 'default'}, {result.iterations} iterations "
             f"after {result.warmup} warm-up",
             "latency ms: " + "  ".join(f"{k} {fmt(lat.get(k))}"
                                        for k in ("p50", "p90", "p99", "mean", "std", "min", "max")),
             f"load {fmt(result.load_ms)} ms, first inference {fmt(result.first_inference_ms)} ms, "
             f"peak RSS {fmt(result.peak_rss_mb)} MB (runtime alone {fmt(result.baseline_rss_mb)} MB)",
             f"device: {ctx.get('hostname')} {ctx.get('machine')} governor {ctx.get('cpu_governor')} "
             f"temp {ctx.get('temp_c_before')} -> {ctx.get('temp_c_after')} C"]
    return Output(result.to_dict(), "\n".join(lines) + note)


def _emulated_note(target: str, targets_file) -> str:
    """A line saying the latencies are an emulator's, for a target whose profile is emulated."""
    from ..compare_steps import EMULATED_NOTE
    from ..profiles import load_profile
    from ..targets import get_target

    profile = get_target(target, targets_file).profile
    return "\nnote: " + EMULATED_NOTE.format(target=target, profile=profile) if load_profile(profile).emulated else ""


def _generation_lines(result) -> str:
    gen, ctx = result.generation, result.context
    fmt = lambda v, spec=".1f": "n/a" if v is None else format(v, spec)  # noqa: E731
    agree = gen.get("token_agreement_host")
    lines = [f"{result.backend} on {result.target}: {result.runtime} {result.runtime_version or ''}, "
             f"threads {result.threads or 'default'}; prompt {gen['prompt_tokens']} tokens "
             f"({gen.get('prefill_mode')} prefill), {gen['new_tokens']} new tokens",
             f"time to first token {fmt(gen.get('ttft_ms'))} ms, prefill {fmt(gen.get('prefill_tok_s'))} tok/s, "
             f"decode {fmt(gen.get('decode_tok_s'))} tok/s (p50 {fmt(result.latency_ms.get('p50'), '.2f')} ms/token)",
             f"load {fmt(result.load_ms)} ms, peak RSS {fmt(result.peak_rss_mb)} MB (runtime alone "
             f"{fmt(result.baseline_rss_mb)} MB), KV cache {fmt((gen.get('kv_cache_bytes') or 0) / 2**20, '.2f')} MB",
             f"tokens: {gen['tokens'][:16]}{' ...' if len(gen['tokens']) > 16 else ''}"
             + ("" if agree is None else f"; same as the host for {agree:.0%} of {gen.get('tokens_checked')}"),
             f"device: {ctx.get('hostname')} {ctx.get('machine')} governor {ctx.get('cpu_governor')} "
             f"temp {ctx.get('temp_c_before')} -> {ctx.get('temp_c_after')} C"]
    return "\n".join(lines)


def add_devices(sub) -> None:
    """`edge deploy` and `edge bench`."""
    dep = command(sub, "deploy", _deploy,
                   "push an artifact, its manifest, sample inputs and the runner to a target")
    dep.add_argument("artifact", help="artifact file (manifest.json beside it) or its folder")
    add_target_options(dep)
    b = command(sub, "bench", _bench, "deploy an artifact and time it on the target")
    b.add_argument("artifact", help="artifact file (manifest.json beside it) or its folder")
    add_target_options(b)
    b.add_argument("--warmup", type=int, default=None, help=f"untimed runs first (default {DEFAULT_WARMUP})")
    b.add_argument("--iterations", type=int, default=None, help=f"timed runs (default {DEFAULT_ITERATIONS})")
    b.add_argument("--threads", type=int, default=None, help="runtime threads (default: runtime's)")
    b.add_argument("--timeout", type=float, default=None,
                   help=f"seconds before the run is stopped (default {DEFAULT_TIMEOUT_S:g})")
    add_device_wait_option(b)
    b.add_argument("--prompt-tokens", type=int, default=None,
                   help="language models: prompt length from the sample prompt (default: the prefill length)")
    b.add_argument("--new-tokens", type=int, default=None,
                   help="language models: tokens to generate greedily (default 64, within the context)")
