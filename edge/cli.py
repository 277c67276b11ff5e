"""The `edge` command line. The only module that prints.

Each command group has one ``_add_<group>(sub)`` function that declares its
subcommands; a handler takes the parsed args and returns an :class:`Output`
(machine-readable ``data`` for ``--json``, human ``text`` otherwise, exit code).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from typing import Any, Callable

from .errors import EdgeError

log = logging.getLogger("edge")


@dataclass
class Output:
    data: Any
    text: str
    exit_code: int = 0


def _common(default: Any) -> argparse.ArgumentParser:
    # Subcommands use SUPPRESS so `edge --json models list` and `edge models list --json` agree.
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", default=default,
                        help="machine-readable result on stdout (logs go to stderr)")
    parent.add_argument("--debug", action="store_true", default=default,
                        help="show tracebacks and debug logs")
    return parent


COMMON = _common(argparse.SUPPRESS)
TOP = _common(False)


def _command(sub, name: str, handler: Callable[[argparse.Namespace], Output], help_: str):
    p = sub.add_parser(name, parents=[COMMON], help=help_, description=help_)
    p.set_defaults(handler=handler)
    return p


def _table(rows: list[dict], columns: list[str]) -> str:
    """Plain fixed-width table; values already formatted as strings or numbers."""
    if not rows:
        return "(none)"
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


# --- models ---------------------------------------------------------------------------

def _models_list(args: argparse.Namespace) -> Output:
    from .models import list_models

    rows = list_models()
    return Output(rows, _table(rows, ["name", "description"]))


def _models_show(args: argparse.Namespace) -> Output:
    from .models import load_model

    info = load_model(args.model).summary()
    lines = [f"{k}: {v}" for k, v in info.items() if k != "inputs"]
    lines += [f"input {i['name']}: {i['shape']} {i['dtype']}" for i in info["inputs"]]
    return Output(info, "\n".join(lines))


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="the model zoo")
    s = p.add_subparsers(dest="models_command", required=True)
    _command(s, "list", _models_list, "list the zoo models")
    show = _command(s, "show", _models_show,
                    "load a model (zoo name, file.py:factory or HF dir) and describe it")
    show.add_argument("model", help="zoo name, path/to/file.py:factory, or a Hugging Face model directory")


# --- profiles -------------------------------------------------------------------------

def _known(value: Any, unit: str = "") -> str:
    return "unknown" if value is None else f"{value:g}{unit}" if isinstance(value, float) \
        else f"{value}{unit}"


def _profiles_list(args: argparse.Namespace) -> Output:
    from .profiles import list_profiles

    rows = [{"name": p.name, "description": p.description, "cpu": p.cpu.model,
             "cores": p.cpu.cores, "max_clock_ghz": p.cpu.max_clock_ghz,
             "total_mb": p.memory.total_mb, "model_budget_mb": p.memory.model_budget_mb,
             "runtimes": list(p.runtimes), "path": str(p.path)} for p in list_profiles()]
    table = [{"name": r["name"], "cores": _known(r["cores"]), "ram": _known(r["total_mb"], " MB"),
              "cpu": r["cpu"].split(" (")[0] + (f" @ {r['max_clock_ghz']:g} GHz"
                                                 if r["max_clock_ghz"] else ""),
              "budget": _known(r["model_budget_mb"], " MB"), "runtimes": ",".join(r["runtimes"])}
             for r in rows]
    return Output(rows, _table(table, ["name", "cpu", "cores", "ram", "budget", "runtimes"]))


def _profile_line(key: str, value: Any, indent: str = "  ") -> str:
    import textwrap

    if isinstance(value, dict) and "kind" in value:  # a compute Peak
        value = _known(value["value"]) + (f" ({value['kind']})" if value["kind"] else "") \
            + (f": {value['note']}" if value["note"] else "")
    elif isinstance(value, list):
        value = ", ".join(map(str, value)) or "(none)"
    elif not isinstance(value, str):
        value = _known(value)
    return textwrap.fill(f"{indent}{key}: {value}", width=100, subsequent_indent=indent + "    ")


def _profiles_show(args: argparse.Namespace) -> Output:
    from .profiles import load_profile

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
    from .calibrate import calibrate, compare_figures, save_calibrated_profile
    from .errors import PartialFailure

    backends = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    result = calibrate(args.target, backends=backends, targets_file=args.targets_file,
                       threads=args.threads)
    path = save_calibrated_profile(result.profile, result.block, args.output)
    rows = compare_figures(result.profile, result.block)
    data = {**result.to_dict(), "path": str(path), "figures": rows}
    table = [{"backend": r["backend"], "figure": r["figure"], "unit": r["unit"],
              "before": "unknown" if r["before"] is None else f"{r['before']:.4g}",
              "measured": "-" if r["measured"] is None else f"{r['measured']:.4g}"} for r in rows]
    lines = [f"{result.profile.name} on target {result.target} ({', '.join(result.backends)}):",
             _table(table, ["backend", "figure", "unit", "before", "measured"]),
             f"bandwidth (device, median over backends): {result.block.get('bandwidth_gbs', '-')} GB/s",
             *[f"note: {n}" for n in result.block["provenance"]["notes"]],
             f"wrote {path}"]
    lines += [f"{b} failed: {msg}" for b, msg in result.failures.items()]
    return Output(data, "\n".join(lines), PartialFailure.exit_code if result.failures else 0)


def _add_profiles(sub) -> None:
    p = sub.add_parser("profiles", help="device profiles: CPU, memory, compute, runtimes")
    s = p.add_subparsers(dest="profiles_command", required=True)
    _command(s, "list", _profiles_list, "list the device profiles (shipped and ~/.config/edge/profiles)")
    show = _command(s, "show", _profiles_show, "show every field of one device profile")
    show.add_argument("profile", metavar="NAME|PATH", help="a profile name or a path to a .yaml file")
    cal = _command(s, "calibrate", _profiles_calibrate,
                   "measure a target's matmul throughput, memory bandwidth and runtime overhead, "
                   "and save its profile with that calibration (the planner prefers it)")
    cal.add_argument("--target", required=True, help="target name (`local` is this machine)")
    cal.add_argument("--targets-file", help="read targets only from this YAML file")
    cal.add_argument("--backends", help="comma-separated backends (default: the profile's runtimes)")
    cal.add_argument("--threads", type=int, default=None, help="runtime threads (default: the runtime's)")
    cal.add_argument("-o", "--output", help="write the calibrated profile here "
                                            "(default: ~/.config/edge/profiles/<profile>.yaml)")


# --- export ---------------------------------------------------------------------------

def _export_row(backend: str, result: Any) -> dict:
    if isinstance(result, EdgeError):
        reason = str(result).splitlines()[0] if str(result) else type(result).__name__
        return {"backend": backend, "file": "-", "status": f"FAILED ({type(result).__name__}): {reason}"}
    m = result.manifest
    val, dele = m.get("validation") or {}, m.get("delegation") or {}
    return {
        "backend": backend, "file": str(result.path), "size": f"{m['size_bytes'] / 1e6:.2f} MB",
        "validation": f"{val['metric']} {val['score']:.4f}" if val else "-",
        "delegation": f"{dele['coverage']:.0%} XNNPACK" if "coverage" in dele else "-",
        "cache": "hit" if m.get("cache_hit") else "miss", "status": "ok",
    }


def _export(args: argparse.Namespace) -> Output:
    from .backends import BACKENDS
    from .errors import PartialFailure
    from .exporter import export, export_all

    plan = None
    if args.plan:
        from .planner import load_plan

        plan = load_plan(args.plan)
    kwargs = {"plan": plan, "use_cache": not args.no_cache, "cache_dir": args.cache_dir}
    if args.backend == "all":
        results = export_all(args.model, list(BACKENDS), args.output, **kwargs)
    else:
        results = {args.backend: export(args.model, args.backend, args.output, **kwargs)}
    failed = {b: r for b, r in results.items() if isinstance(r, EdgeError)}
    data = [
        {"backend": b, "error": str(r), "type": type(r).__name__, "exit_code": r.exit_code}
        if isinstance(r, EdgeError) else {"path": str(r.path), **r.manifest}
        for b, r in results.items()
    ]
    text = _table([_export_row(b, r) for b, r in results.items()],
                  ["backend", "file", "size", "validation", "delegation", "cache", "status"])
    text += "".join(f"\n\n{b} failed:\n{r}" for b, r in failed.items())
    exit_code = 0
    if failed:
        exit_code = next(iter(failed.values())).exit_code if len(failed) == len(results) else PartialFailure.exit_code
    return Output(data, text, exit_code)


def _add_export(sub) -> None:
    p = _command(sub, "export", _export, "convert a model to torchscript (.ptl), executorch (.pte) or tflite")
    p.add_argument("model", help="zoo name, path/to/file.py:factory or Hugging Face model directory")
    p.add_argument("--backend", required=True, choices=["torchscript", "executorch", "tflite", "all"],
                   help="target runtime; 'all' exports to each and reports failures as rows")
    p.add_argument("--plan", help="compression plan (YAML/JSON from `edge plan`) applied before export")
    p.add_argument("-o", "--output", required=True, help="output directory (one folder per artifact)")
    p.add_argument("--no-cache", action="store_true", help="convert even if the artifact cache has it")
    p.add_argument("--cache-dir", help="artifact cache (default $EDGE_CACHE_DIR or ~/.cache/edge/artifacts)")


# --- plan -----------------------------------------------------------------------------

def _render_plan(plan) -> str:
    pred = plan.predicted
    lines = [f"plan for {plan.model} on {plan.profile}: backend {plan.backend}",
             "recipe: " + (", ".join(c.label() for c in plan.recipe) or "none (fp32)"),
             "groups: " + ", ".join(f"{g}={p}" for g, p in plan.groups.items()),
             f"predicted: size {pred['size_mb']} MB, peak memory {pred['peak_memory_mb']} MB, "
             f"latency {pred['latency_ms']} ms, accuracy {pred['accuracy']} ({plan.accuracy_basis})",
             "", "Pareto front (feasible alternatives):"]
    rows = [{"backend": a["backend"], "structure": a["structure"],
             "groups": " ".join(f"{g}={p}" for g, p in a["groups"].items() if p != "fp32") or "fp32",
             "size_mb": a["predicted"]["size_mb"], "memory_mb": a["predicted"]["peak_memory_mb"],
             "latency_ms": a["predicted"]["latency_ms"], "accuracy": a["predicted"]["accuracy"],
             "basis": a["accuracy_basis"]} for a in plan.pareto]
    lines.append(_table(rows, ["backend", "structure", "groups", "size_mb", "memory_mb", "latency_ms",
                               "accuracy", "basis"]))
    lines += ["", "reasons:"] + [f"  - {r}" for r in plan.reasons]
    if plan.notes:
        lines += ["", "cost-model notes:"] + [f"  - {n}" for n in plan.notes]
    return "\n".join(lines)


def _plan(args: argparse.Namespace) -> Output:
    from .models import load_model
    from .planner import Constraints, make_plan, save_plan
    from .profiles import load_profile

    backends = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    constraints = Constraints(min_accuracy=args.min_accuracy, max_latency_ms=args.max_latency_ms,
                              max_size_mb=args.max_size_mb)
    plan = make_plan(load_model(args.model), load_profile(args.profile), constraints,
                     backends=backends, distill=args.distill)
    text = _render_plan(plan)
    if args.output:
        text += f"\n\nwritten to {save_plan(plan, args.output)}"
    return Output(plan.to_dict(), text)


def _add_plan(sub) -> None:
    p = _command(sub, "plan", _plan, "choose compression recipe and backend for a device")
    p.add_argument("model", help="zoo name, path/to/file.py:factory or Hugging Face directory")
    p.add_argument("--profile", required=True, help="device profile name or YAML path")
    p.add_argument("--min-accuracy", type=float, default=0.99,
                   help="minimum metric vs fp32 (1.0 = identical; default 0.99)")
    p.add_argument("--max-latency-ms", type=float, default=None, help="predicted latency limit")
    p.add_argument("--max-size-mb", type=float, default=None, help="artifact size limit")
    p.add_argument("--backends", default=None, help="comma-separated backends to consider")
    p.add_argument("--distill", action="store_true",
                   help="also try a distilled shallower student (trains up to 30 s)")
    p.add_argument("-o", "--output", default=None, help="write the plan (.yaml/.yml/.json)")


# --- targets, deploy, bench -----------------------------------------------------------

def _targets_list(args: argparse.Namespace) -> Output:
    from .targets import load_targets

    rows = [t.to_dict() for t in load_targets(args.targets_file).values()]
    table = [{"name": r["name"], "transport": r["transport"], "profile": r["profile"],
              "address": (f"{r['user'] + '@' if r['user'] else ''}{r['host']}"
                          f"{':' + str(r['port']) if r['port'] else ''}" if r["host"]
                          else r["serial"] or "this machine"),
              "workdir": r["workdir"], "source": r["source"]} for r in rows]
    return Output(rows, _table(table, ["name", "transport", "profile", "address", "workdir", "source"]))


def _targets_check(args: argparse.Namespace) -> Output:
    from .bench import check_target

    info = check_target(args.target, args.targets_file, args.trust_new_host)
    dev = info["device"]
    runtimes = ", ".join(f"{k} {v}" for k, v in dev["runtimes"].items()) or "(none importable)"
    lines = [f"target {info['target']} ({info['transport']}), profile {info['profile']}",
             f"  arch: {dev['arch']}", f"  cores: {_known(dev['cores'])}",
             f"  RAM: {_known(dev['ram_mb'], ' MB')}",
             f"  memory limit: {_known(dev['memory_limit_mb'], ' MB')}",
             f"  free disk in workdir: {_known(dev['free_disk_mb'], ' MB')}",
             f"  python: {dev['python'] or '(not runnable)'}", f"  runtimes: {runtimes}",
             "  profile matches the device" if info["profile_matches"]
             else "  profile does NOT match the device:"]
    lines += [f"    - {m}" for m in info["mismatches"]]
    return Output(info, "\n".join(lines))


def _deploy(args: argparse.Namespace) -> Output:
    from .bench import deploy

    info = deploy(args.artifact, args.target, args.targets_file, args.trust_new_host)
    rows = [{"file": k, "remote_path": f["remote_path"],
             "pushed": "unchanged" if f["skipped"] else f"{f['bytes_sent']} bytes"}
            for k, f in info["files"].items()]
    text = _table(rows, ["file", "remote_path", "pushed"])
    return Output(info, text + f"\ndeployed to {info['target']}:{info['remote_dir']} "
                               f"({info['bytes_sent']} bytes sent)")


def _bench(args: argparse.Namespace) -> Output:
    from .bench import bench

    result = bench(args.artifact, args.target, warmup=args.warmup, iterations=args.iterations,
                   threads=args.threads, targets_file=args.targets_file,
                   trust_new_host=args.trust_new_host, timeout_s=args.timeout)
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


def _target_options(p, needs_target: bool = True) -> None:
    if needs_target:
        p.add_argument("--target", required=True, help="target name (see `edge targets list`)")
        p.add_argument("--trust-new-host", action="store_true",
                       help="accept and record an unknown SSH host key in the target's known_hosts")
    p.add_argument("--targets-file", help="read targets only from this YAML file")


def _add_devices(sub) -> None:
    p = sub.add_parser("targets", help="the devices edge can reach")
    s = p.add_subparsers(dest="targets_command", required=True)
    _target_options(_command(s, "list", _targets_list, "list the known targets"), needs_target=False)
    check = _command(s, "check", _targets_check,
                     "connect and report arch, RAM, disk, runtimes and whether the profile matches")
    check.add_argument("target", help="target name")
    check.add_argument("--trust-new-host", action="store_true",
                       help="accept and record an unknown SSH host key")
    _target_options(check, needs_target=False)
    dep = _command(sub, "deploy", _deploy,
                   "push an artifact, its manifest, sample inputs and the runner to a target")
    dep.add_argument("artifact", help="artifact file (manifest.json beside it) or its folder")
    _target_options(dep)
    b = _command(sub, "bench", _bench, "deploy an artifact and time it on the target")
    b.add_argument("artifact", help="artifact file (manifest.json beside it) or its folder")
    _target_options(b)
    b.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    b.add_argument("--iterations", type=int, default=50, help="timed runs (default 50)")
    b.add_argument("--threads", type=int, default=None, help="runtime threads (default: runtime's)")
    b.add_argument("--timeout", type=float, default=600, help="seconds before the run is stopped")


# --- compare, results, report ---------------------------------------------------------

class _CompareProgress:
    """One stderr line per step, e.g. ``[tflite] export ... done 12.3 s`` (terminals only)."""

    def __init__(self, stream):
        self.stream = stream

    def __call__(self, event) -> None:
        who = event.backend if event.plan_name in ("", "fp32") else f"{event.backend} {event.plan_name}"
        head = f"[{who}] {event.step} ..."
        # "\r" rewrites the whole line, so a toolchain's own output in between does not garble it
        if event.status == "start":
            self.stream.write(head)
        elif event.status == "cached":
            self.stream.write(f"{head} cached\n")
        elif event.status == "done":
            self.stream.write(f"\r{head} done {event.seconds:.1f} s\x1b[K\n")
        else:
            self.stream.write(f"\r{head} failed after {event.seconds:.1f} s: {event.detail}\x1b[K\n")
        self.stream.flush()


class _ProgressOnly:
    """While the progress display runs, info logs and toolchain warnings stay quiet."""

    def __init__(self, enabled: bool):
        import warnings

        self.enabled, self.level = enabled, None
        self.warnings = warnings.catch_warnings()

    def __enter__(self):
        if self.enabled:
            import warnings

            # toolchains log chatter at WARNING; edge's own warnings (a failed backend) stay
            self.level = (logging.getLogger().level, log.level)
            logging.getLogger().setLevel(logging.ERROR)
            log.setLevel(logging.WARNING)
            self.warnings.__enter__()
            warnings.simplefilter("ignore")
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.warnings.__exit__(*exc)
            logging.getLogger().setLevel(self.level[0])
            log.setLevel(self.level[1])
        return False


def _compare(args: argparse.Namespace) -> Output:
    from .compare import compare
    from .report import summary_row, text_table

    show = not args.json and sys.stderr.isatty()
    with _ProgressOnly(show and not args.debug):
        result = compare(
            args.model, args.profile, args.target, backends=args.backends, min_accuracy=args.min_accuracy,
            max_latency_ms=args.max_latency_ms, max_size_mb=args.max_size_mb, plans=args.plans,
            out_dir=args.output, db=args.db, targets_file=args.targets_file, warmup=args.warmup,
            iterations=args.iterations, threads=args.threads,
            progress=_CompareProgress(sys.stderr) if show else None,
        )
    run = result.run
    data = {"run_id": run.run_id, "status": run.status, "exit_code": result.exit_code,
            "rows": [summary_row(r) for r in run.rows], "report_html": result.paths["html"],
            "csv": result.paths["csv"], "json": result.paths["json"], "db": str(result.db_path),
            "steps": [vars(s) for s in result.steps]}
    text = (f"{text_table(run)}\n\nreport: {result.paths['html']}\ncsv:    {result.paths['csv']}\n"
            f"stored as run {run.run_id} in {result.db_path} (edge results show {run.run_id})")
    return Output(data, text, result.exit_code)


def _results_list(args: argparse.Namespace) -> Output:
    from .results import ResultsStore

    runs = ResultsStore(args.db).list_runs()
    rows = [{**r, "rows": f"{r['ok_rows']}/{r['rows']}", "backends": ",".join(r["backends"])} for r in runs]
    return Output(runs, _table(rows, ["run_id", "created_at", "model", "profile", "target", "status", "rows",
                                      "backends"]))


def _results_show(args: argparse.Namespace) -> Output:
    from .report import text_table
    from .results import ResultsStore

    run = ResultsStore(args.db).get_run(args.run)
    host = (run.context or {}).get("host", {})
    device = (run.context or {}).get("device", {})
    lines = [text_table(run), "",
             f"created: {run.created_at}   host: {host.get('hostname') or '-'}   device: "
             f"{device.get('hostname') or '-'} ({device.get('machine') or '-'}, governor "
             f"{device.get('cpu_governor') or '-'})"]
    if run.extra.get("report_html"):
        lines.append(f"report: {run.extra['report_html']}")
    return Output(run.to_dict(), "\n".join(lines))


def _fmt_delta(value, pct, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" + ("" if pct is None else f" ({pct:+.1f}%)")


def _results_compare(args: argparse.Namespace) -> Output:
    from .report import fmt_ms
    from .results import ResultsStore, compare_runs

    store = ResultsStore(args.db)
    diff = compare_runs(store.get_run(args.run_a), store.get_run(args.run_b))
    rows = []
    for r in diff["rows"]:
        a, b, d = r["a"] or {}, r["b"] or {}, r["delta"]
        rows.append({"backend": r["backend"], "plan": r["plan_name"], "status": r["status"],
                     "A p50 ms": fmt_ms(a.get("p50_ms")), "B p50 ms": fmt_ms(b.get("p50_ms")),
                     "delta p50": _fmt_delta(d.get("p50_ms"), d.get("p50_pct")),
                     "delta size": _fmt_delta(d.get("size_bytes"), d.get("size_pct"), 0),
                     "delta accuracy": _fmt_delta(d.get("accuracy"), None, 4)})
    text = f"A = {diff['a']}, B = {diff['b']}\n" + _table(
        rows, ["backend", "plan", "status", "A p50 ms", "B p50 ms", "delta p50", "delta size", "delta accuracy"])
    if diff["flags"]:
        text += "\n\nnot directly comparable:\n" + "\n".join(f"  ! {f}" for f in diff["flags"])
    else:
        text += "\n\nrun contexts match"
    return Output(diff, text)


def _report(args: argparse.Namespace) -> Output:
    from pathlib import Path

    from .errors import ResultsError
    from .report import to_csv, to_json
    from .report_html import render_html
    from .results import ResultsStore

    run = ResultsStore(args.db).get_run(args.run)
    out = Path(args.output)
    render = {".csv": to_csv, ".json": to_json}.get(out.suffix.lower(), render_html)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(run))
    except OSError as exc:
        raise ResultsError(f"could not write {out}: {exc}; choose a writable path with -o") from exc
    return Output({"run_id": run.run_id, "report": str(out)}, f"wrote {out} (run {run.run_id})")


def _db_option(p) -> None:
    p.add_argument("--db", default=None,
                   help="results store (default $EDGE_RESULTS_DB or ~/.local/share/edge/results.db)")


def _add_compare(sub) -> None:
    p = _command(sub, "compare", _compare,
                 "plan, export, deploy and benchmark a model on a target for every backend, then report")
    p.add_argument("model", help="zoo name, path/to/file.py:factory or Hugging Face directory")
    p.add_argument("--profile", default=None, help="device profile (default: the target's profile)")
    p.add_argument("--target", default="local", help="target name (default: local)")
    p.add_argument("--backends", default="all", help="'all' or a comma-separated list")
    p.add_argument("--min-accuracy", type=float, default=None, help="lowest accepted accuracy score (1.0 = fp32)")
    p.add_argument("--max-latency-ms", type=float, default=None, help="latency budget on the device")
    p.add_argument("--max-size-mb", type=float, default=None, help="artifact size budget")
    p.add_argument("--plans", type=int, default=1, help="measure the top N plans of each backend (default 1)")
    p.add_argument("-o", "--output", required=True, help="output folder (resumable: rerun to continue)")
    _db_option(p)
    p.add_argument("--targets-file", default=None, help="target inventory YAML")
    p.add_argument("--warmup", type=int, default=5, help="warm-up inferences (default 5)")
    p.add_argument("--iterations", type=int, default=50, help="timed inferences (default 50)")
    p.add_argument("--threads", type=int, default=None, help="runtime threads (default: the runtime's)")

    r = sub.add_parser("results", help="stored compare runs")
    s = r.add_subparsers(dest="results_command", required=True)
    _db_option(_command(s, "list", _results_list, "list stored runs, newest first"))
    p = _command(s, "show", _results_show, "show one run (id, unique prefix or 'latest')")
    p.add_argument("run")
    _db_option(p)
    p = _command(s, "compare", _results_compare, "compare two runs; flags differing run contexts")
    p.add_argument("run_a")
    p.add_argument("run_b")
    _db_option(p)

    p = _command(sub, "report", _report, "regenerate a run's report (.html, .csv or .json by suffix)")
    p.add_argument("run")
    p.add_argument("-o", "--output", required=True, help="report file")
    _db_option(p)


COMMAND_GROUPS = [_add_models, _add_profiles, _add_export, _add_plan, _add_devices, _add_compare]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge", parents=[TOP],
        description="Plan, compress, export, deploy and benchmark PyTorch models on edge devices.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMAND_GROUPS:
        add(sub)
    return parser


def _emit(out: Output, as_json: bool) -> None:
    if as_json:
        print(json.dumps(out.data, indent=2, default=str))
    elif out.text:
        print(out.text)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO if not args.json else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr,
    )
    try:
        out = args.handler(args)
    except EdgeError as exc:
        if debug:
            log.exception("failed")
        if args.json:
            print(json.dumps({"error": str(exc), "type": type(exc).__name__, "exit_code": exc.exit_code}))
        print(f"edge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edge: interrupted", file=sys.stderr)
        return 130
    try:
        _emit(out, args.json)
    except BrokenPipeError:  # `edge ... | head`: the reader left; not an error of ours
        sys.stderr.close()
    return out.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
