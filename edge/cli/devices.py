"""`edge targets`, `edge deploy`, `edge bench`."""
from __future__ import annotations

import argparse

from .common import Output, command, known, render_table


# --- targets, deploy, bench -----------------------------------------------------------

def _targets_list(args: argparse.Namespace) -> Output:
    from ..targets import load_targets

    rows = [t.to_dict() for t in load_targets(args.targets_file).values()]
    shown = [{"name": r["name"], "transport": r["transport"], "profile": r["profile"],
              "address": (f"{r['user'] + '@' if r['user'] else ''}{r['host']}"
                          f"{':' + str(r['port']) if r['port'] else ''}" if r["host"]
                          else r["serial"] or "this machine"),
              "workdir": r["workdir"], "source": r["source"]} for r in rows]
    return Output(rows, render_table(shown, ["name", "transport", "profile", "address", "workdir", "source"]))


def _targets_check(args: argparse.Namespace) -> Output:
    from ..bench import check_target

    info = check_target(args.target, args.targets_file, args.trust_new_host)
    dev = info["device"]
    runtimes = ", ".join(f"{k} {v}" for k, v in dev["runtimes"].items()) or "(none importable)"
    lines = [f"target {info['target']} ({info['transport']}), profile {info['profile']}",
             f"  arch: {dev['arch']}", f"  cores: {known(dev['cores'])}",
             f"  RAM: {known(dev['ram_mb'], ' MB')}",
             f"  memory limit: {known(dev['memory_limit_mb'], ' MB')}",
             f"  free disk in workdir: {known(dev['free_disk_mb'], ' MB')}",
             f"  python: {dev['python'] or '(not runnable)'}", f"  runtimes: {runtimes}",
             "  profile matches the device" if info["profile_matches"]
             else "  profile does NOT match the device:"]
    lines += [f"    - {m}" for m in info["mismatches"]]
    return Output(info, "\n".join(lines))


def _deploy(args: argparse.Namespace) -> Output:
    from ..bench import deploy

    info = deploy(args.artifact, args.target, args.targets_file, args.trust_new_host)
    rows = [{"file": k, "remote_path": f["remote_path"],
             "pushed": "unchanged" if f["skipped"] else f"{f['bytes_sent']} bytes"}
            for k, f in info["files"].items()]
    text = render_table(rows, ["file", "remote_path", "pushed"])
    return Output(info, text + f"\ndeployed to {info['target']}:{info['remote_dir']} "
                               f"({info['bytes_sent']} bytes sent)")


def _bench(args: argparse.Namespace) -> Output:
    from ..bench import bench

    result = bench(args.artifact, args.target, warmup=args.warmup, iterations=args.iterations,
                   threads=args.threads, targets_file=args.targets_file,
                   trust_new_host=args.trust_new_host, timeout_s=args.timeout,
                   prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens)
    if result.generation:
        return Output(result.to_dict(), _generation_lines(result))
    lat = result.latency_ms
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}" if v >= 1 else f"{v:.3g}"  # noqa: E731
    ctx = result.context
    lines = [f"{result.backend} on {result.target}: {result.runtime} {result.runtime_version or ''}, "
             f"threads {result.threads or 'default'}, {result.iterations} iterations "
             f"after {result.warmup} warm-up",
             "latency ms: " + "  ".join(f"{k} {fmt(lat.get(k))}"
                                        for k in ("p50", "p90", "p99", "mean", "std", "min", "max")),
             f"load {fmt(result.load_ms)} ms, first inference {fmt(result.first_inference_ms)} ms, "
             f"peak RSS {fmt(result.peak_rss_mb)} MB",
             f"device: {ctx.get('hostname')} {ctx.get('machine')} governor {ctx.get('cpu_governor')} "
             f"temp {ctx.get('temp_c_before')} -> {ctx.get('temp_c_after')} C"]
    return Output(result.to_dict(), "\n".join(lines))


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


def _target_options(p, needs_target: bool = True) -> None:
    if needs_target:
        p.add_argument("--target", required=True, help="target name (see `edge targets list`)")
        p.add_argument("--trust-new-host", action="store_true",
                       help="accept and record an unknown SSH host key in the target's known_hosts")
    p.add_argument("--targets-file", help="read targets only from this YAML file")


def add_devices(sub) -> None:
    p = sub.add_parser("targets", help="the devices edge can reach")
    s = p.add_subparsers(dest="targets_command", required=True)
    _target_options(command(s, "list", _targets_list, "list the known targets"), needs_target=False)
    check = command(s, "check", _targets_check,
                     "connect and report arch, RAM, disk, runtimes and whether the profile matches")
    check.add_argument("target", help="target name")
    check.add_argument("--trust-new-host", action="store_true",
                       help="accept and record an unknown SSH host key")
    _target_options(check, needs_target=False)
    dep = command(sub, "deploy", _deploy,
                   "push an artifact, its manifest, sample inputs and the runner to a target")
    dep.add_argument("artifact", help="artifact file (manifest.json beside it) or its folder")
    _target_options(dep)
    b = command(sub, "bench", _bench, "deploy an artifact and time it on the target")
    b.add_argument("artifact", help="artifact file (manifest.json beside it) or its folder")
    _target_options(b)
    b.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    b.add_argument("--iterations", type=int, default=50, help="timed runs (default 50)")
    b.add_argument("--threads", type=int, default=None, help="runtime threads (default: runtime's)")
    b.add_argument("--timeout", type=float, default=600, help="seconds before the run is stopped")
    b.add_argument("--prompt-tokens", type=int, default=None,
                   help="language models: prompt length from the sample prompt (default: the prefill length)")
    b.add_argument("--new-tokens", type=int, default=None,
                   help="language models: tokens to generate greedily (default 64, within the context)")
