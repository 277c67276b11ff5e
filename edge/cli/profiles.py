"""`edge profiles`: list, show, calibrate."""
from __future__ import annotations

import argparse
import json
from typing import Any

from .common import Output, command, known, render_table


# --- profiles -------------------------------------------------------------------------

def _profiles_list(args: argparse.Namespace) -> Output:
    from ..profiles import list_profiles

    rows = [{"name": p.name, "description": p.description, "cpu": p.cpu.model,
             "cores": p.cpu.cores, "max_clock_ghz": p.cpu.max_clock_ghz,
             "total_mb": p.memory.total_mb, "model_budget_mb": p.memory.model_budget_mb,
             "runtimes": list(p.runtimes), "path": str(p.path)} for p in list_profiles()]
    shown = [{"name": r["name"], "cores": known(r["cores"]), "ram": known(r["total_mb"], " MB"),
              "cpu": r["cpu"].split(" (")[0] + (f" @ {r['max_clock_ghz']:g} GHz"
                                                 if r["max_clock_ghz"] else ""),
              "budget": known(r["model_budget_mb"], " MB"), "runtimes": ",".join(r["runtimes"])}
             for r in rows]
    return Output(rows, render_table(shown, ["name", "cpu", "cores", "ram", "budget", "runtimes"]))


def _profile_line(key: str, value: Any, indent: str = "  ") -> str:
    import textwrap

    if isinstance(value, dict) and "kind" in value:  # a compute Peak
        value = known(value["value"]) + (f" ({value['kind']})" if value["kind"] else "") \
            + (f": {value['note']}" if value["note"] else "")
    elif isinstance(value, list):
        value = ", ".join(map(str, value)) or "(none)"
    elif not isinstance(value, str):
        value = known(value)
    return textwrap.fill(f"{indent}{key}: {value}", width=100, subsequent_indent=indent + "    ")


def _profiles_show(args: argparse.Namespace) -> Output:
    from ..profiles import load_profile

    profile = load_profile(args.profile)
    data = profile.to_dict()
    lines = [f"{profile.name}: {profile.description}", f"  file: {profile.path}"]
    lines += [_profile_line(k, data[k]) for k in ("arch", "os", "transport", "runtimes",
                                                  "accelerators")]
    for section in ("cpu", "memory", "storage", "compute"):
        lines += [f"{section}:"] + [_profile_line(k, v) for k, v in data[section].items()]
    lines += ["sources:"] + [f"  {s}" for s in data["sources"] or ["(none)"]]
    lines += [_profile_line("notes", data["notes"], indent="")]
    calibration = data.get("calibration")
    lines += ["calibration:"] + ([_profile_line(k, json.dumps(v, default=str))
                                  for k, v in calibration.items()] if calibration else ["  (none)"])
    return Output(data, "\n".join(lines))


def _profiles_calibrate(args: argparse.Namespace) -> Output:
    from ..calibrate import calibrate, compare_figures, save_calibrated_profile
    from ..errors import PartialFailure

    backends = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    result = calibrate(args.target, backends=backends, targets_file=args.targets_file,
                       threads=args.threads, repeats=args.repeats, max_spread=args.max_spread, llm=args.llm)
    path = save_calibrated_profile(result.profile, result.block, args.output)
    rows = compare_figures(result.profile, result.block)
    data = {**result.to_dict(), "path": str(path), "figures": rows}
    shown = [{"backend": r["backend"], "figure": r["figure"], "unit": r["unit"],
              "before": "unknown" if r["before"] is None else f"{r['before']:.4g}",
              "measured": "-" if r["measured"] is None else f"{r['measured']:.4g}"} for r in rows]
    lines = [f"{result.profile.name} on target {result.target} ({', '.join(result.backends)}):",
             render_table(shown, ["backend", "figure", "unit", "before", "measured"]),
             f"bandwidth (device, median over backends): {result.block.get('bandwidth_gbs', '-')} GB/s",
             f"spread of {result.block['repeats']} repeats (median over probes): "
             + ", ".join(f"{b} {100 * v:.1f}%" for b, v in result.block["spread"].items())
             + "; cost model error on the probes: "
             + ", ".join(f"{b} {100 * v:.1f}%" for b, v in result.block["probe_error"].items()),
             *[f"term scales (fitted to the composite probes), {b}: " + ", ".join(
                 f"{t} x{v:.3g}" for t, v in scales.items() if v != 1.0) for b, scales in
               result.block.get("term_scale", {}).items()],
             *[f"decode (language models), {b}: " + ", ".join(
                 f"{k} {v:.4g} GB/s" + (f" (prefill {result.block['prefill_gops'][b][k]:.4g} GOPS)"
                                        if k in result.block.get("prefill_gops", {}).get(b, {}) else "")
                 for k, v in rates.items())
               + (f", {result.block['decode_layer_ms'][b]:.3g} ms a layer beyond its bytes"
                  if b in result.block.get("decode_layer_ms", {}) else "")
               for b, rates in result.block.get("decode_gbs", {}).items()],
             *[f"note: {n}" for n in result.block["provenance"]["notes"]],
             f"wrote {path}"]
    lines += [f"{b} failed: {msg}" for b, msg in result.failures.items()]
    return Output(data, "\n".join(lines), PartialFailure.exit_code if result.failures else 0)


def add_profiles(sub) -> None:
    p = sub.add_parser("profiles", help="device profiles: CPU, memory, compute, runtimes")
    s = p.add_subparsers(dest="profiles_command", required=True)
    command(s, "list", _profiles_list, "list the device profiles (shipped and ~/.config/edge/profiles)")
    show = command(s, "show", _profiles_show, "show every field of one device profile")
    show.add_argument("profile", metavar="NAME|PATH", help="a profile name or a path to a .yaml file")
    cal = command(s, "calibrate", _profiles_calibrate,
                   "measure a target's matmul throughput, memory bandwidth and runtime overhead, "
                   "and save its profile with that calibration (the planner prefers it)")
    cal.add_argument("--target", required=True, help="target name (`local` is this machine)")
    cal.add_argument("--targets-file", help="read targets only from this YAML file")
    cal.add_argument("--backends", help="comma-separated backends (default: the profile's runtimes)")
    cal.add_argument("--threads", type=int, default=None, help="runtime threads (default: the runtime's)")
    cal.add_argument("--repeats", type=int, default=3, help="time every probe this many times; the median "
                                                            "is kept, the spread recorded (default 3)")
    cal.add_argument("--max-spread", type=float, default=0.25,
                     help="refuse (exit 11, nothing written) when a backend's median probe spread "
                          "exceeds this ratio (default 0.25)")
    cal.add_argument("--llm", action="store_true",
                     help="also time a synthetic decoder per weight type (fp32, int8, int4) in generation "
                          "mode: the decode and prefill rates language-model plans use; llama.cpp is "
                          "calibrated by these alone (the first run exports them: minutes; cached after)")
    cal.add_argument("-o", "--output", help="write the calibrated profile here "
                                            "(default: ~/.config/edge/profiles/<profile>.yaml)")
