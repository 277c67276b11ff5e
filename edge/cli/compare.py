"""`edge compare`, `edge results`, `edge report`."""
from __future__ import annotations

import argparse
import logging
import sys

from ..defaults import ITERATIONS as DEFAULT_ITERATIONS, WARMUP as DEFAULT_WARMUP
from .common import given, MODEL_HELP, add_device_wait_option, add_text_options, log, Output, command, render_table


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
    from ..comparison import compare
    from ..report import summary_row, text_table

    show = not args.json and sys.stderr.isatty()
    with _ProgressOnly(show and not args.debug):
        result = compare(
            args.model, args.profile, args.target, backends=args.backends, min_accuracy=args.min_accuracy,
            max_latency_ms=args.max_latency_ms, max_size_mb=args.max_size_mb, plans=args.plans,
            out_dir=args.output, db=args.db, targets_file=args.targets_file, threads=args.threads,
            **given(args, "warmup", "iterations"),
            progress=_CompareProgress(sys.stderr) if show else None,
            prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens,
            device_wait_s=args.device_wait,
        )
    run = result.run
    data = {"run_id": run.run_id, "status": run.status, "exit_code": result.exit_code,
            "rows": [summary_row(r) for r in run.rows], "report_html": result.paths["html"],
            "csv": result.paths["csv"], "json": result.paths["json"], "db": str(result.db_path),
            "steps": [vars(s) for s in result.steps]}
    notes = "".join(f"\nnote: {n}" for n in run.extra.get("notes") or [])
    text = (f"{text_table(run)}\n{notes}\nreport: {result.paths['html']}\ncsv:    {result.paths['csv']}\n"
            f"stored as run {run.run_id} in {result.db_path} (edge results show {run.run_id})")
    return Output(data, text, result.exit_code)


def _results_list(args: argparse.Namespace) -> Output:
    from ..results import ResultsStore

    runs = ResultsStore(args.db).list_runs()
    rows = [{**r, "rows": f"{r['ok_rows']}/{r['rows']}", "backends": ",".join(r["backends"])} for r in runs]
    return Output(runs, render_table(rows, ["run_id", "created_at", "model", "profile", "target", "status", "rows",
                                      "backends"]))


def _results_show(args: argparse.Namespace) -> Output:
    from ..report import text_table
    from ..results import ResultsStore

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
    from ..report import fmt_ms
    from ..results import ResultsStore, compare_runs

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
        if "decode_tok_s" not in a and "decode_tok_s" not in b:
            continue
        rows[-1].update({"A decode tok/s": fmt_ms(a.get("decode_tok_s")), "B decode tok/s": fmt_ms(b.get("decode_tok_s")),
                     "delta decode": _fmt_delta(d.get("decode_tok_s"), d.get("decode_tok_pct"), 1),
                     "delta TTFT": _fmt_delta(d.get("ttft_ms"), d.get("ttft_pct"), 2)})
    text = f"A = {diff['a']}, B = {diff['b']}\n" + render_table(
        rows, ["backend", "plan", "status", "A p50 ms", "B p50 ms", "delta p50", "delta size", "delta accuracy",
               "A decode tok/s", "B decode tok/s", "delta decode", "delta TTFT"])
    if diff["flags"]:
        text += "\n\nnot directly comparable:\n" + "\n".join(f"  ! {f}" for f in diff["flags"])
    else:
        text += "\n\nrun contexts match"
    return Output(diff, text)


def _report(args: argparse.Namespace) -> Output:
    from pathlib import Path

    from ..errors import ResultsError
    from ..report import to_csv, to_json
    from ..report.html import render_html
    from ..results import ResultsStore

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


def add_compare(sub) -> None:
    p = command(sub, "compare", _compare,
                 "plan, export, deploy and benchmark a model on a target for every backend, then report")
    p.add_argument("model", help=MODEL_HELP)
    add_text_options(p)
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
    p.add_argument("--warmup", type=int, default=None, help=f"warm-up inferences (default {DEFAULT_WARMUP})")
    p.add_argument("--iterations", type=int, default=None, help=f"timed inferences (default {DEFAULT_ITERATIONS})")
    p.add_argument("--threads", type=int, default=None, help="runtime threads (default: the runtime's)")
    add_device_wait_option(p)
    p.add_argument("--prompt-tokens", type=int, default=None,
                   help="language models: prompt length measured on the device (default: the prefill length)")
    p.add_argument("--new-tokens", type=int, default=None,
                   help="language models: tokens generated on the device (default 64, within the context)")

    r = sub.add_parser("results", help="stored compare runs")
    s = r.add_subparsers(dest="results_command", required=True)
    _db_option(command(s, "list", _results_list, "list stored runs, newest first"))
    p = command(s, "show", _results_show, "show one run (id, unique prefix or 'latest')")
    p.add_argument("run")
    _db_option(p)
    p = command(s, "compare", _results_compare, "compare two runs; flags differing run contexts")
    p.add_argument("run_a")
    p.add_argument("run_b")
    _db_option(p)

    p = command(sub, "report", _report, "regenerate a run's report (.html, .csv or .json by suffix)")
    p.add_argument("run")
    p.add_argument("-o", "--output", required=True, help="report file")
    _db_option(p)
