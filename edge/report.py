"""Reports of a run: text table, CSV, JSON. Pure functions of a :class:`~edge.results.Run`.

Plots live in :mod:`edge.plots`, the self-contained HTML page in :mod:`edge.report_html`;
:func:`write_report_files` is the one function here that writes files.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .results import Run, RunRow

CSV_COLUMNS = [
    "run_id", "model", "profile", "target", "backend", "plan", "size_bytes",
    "predicted_size_bytes", "predicted_latency_ms", "latency_p50_ms", "latency_p90_ms",
    "latency_p99_ms", "latency_mean_ms", "latency_std_ms", "latency_min_ms", "latency_max_ms",
    "samples", "load_ms", "first_inference_ms", "peak_rss_mb", "predicted_peak_memory_mb",
    "metric", "accuracy", "predicted_accuracy", "delegation", "runtime", "runtime_version",
    "threads", "artifact_sha256", "error",
    # language models (empty otherwise)
    "prompt_tokens", "new_tokens", "ttft_ms", "prefill_tok_s", "decode_tok_s", "kv_cache_bytes",
    "baseline_rss_mb", "model_rss_mb", "token_agreement_eager", "perplexity", "perplexity_fp32",
]

TABLE_COLUMNS = ["backend", "plan", "size", "pred p50", "p50 ms", "p90 ms", "TTFT ms", "prefill tok/s",
                 "decode tok/s", "KV MB", "peak MB", "accuracy", "delegated", "error"]
GENERATION_FIELDS = ("prompt_tokens", "new_tokens", "ttft_ms", "prefill_tok_s", "decode_tok_s", "kv_cache_bytes",
                     "model_rss_mb", "token_agreement_eager", "prefill_mode")


def generation_of(row: RunRow) -> dict:
    """A language-model row's generation figures (empty for other models)."""
    return row.generation if isinstance(row.generation, dict) else {}


def fmt_bytes(size_bytes: int | float | None) -> str:
    """``1.23 MB``-style sizes (decimal units, as device budgets are quoted)."""
    if size_bytes is None:
        return "-"
    value = float(size_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1000
    return f"{value:.2f} GB"  # pragma: no cover


def fmt_num(value, digits: int = 2) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def fmt_ms(value) -> str:
    """Milliseconds with precision to match: 123.4, 12.35, 0.0123."""
    if value is None:
        return "-"
    value = float(value)
    return f"{value:.1f}" if value >= 100 else f"{value:.2f}" if value >= 1 else f"{value:.4f}"


def delegation_coverage(delegation: dict | None) -> float | None:
    """Fraction of work a backend handed to its accelerated path (0..1), when it says."""
    if not isinstance(delegation, dict):
        return None
    for key in ("coverage", "delegated_fraction", "fraction"):
        if isinstance(delegation.get(key), (int, float)):
            return float(delegation[key])
    pairs = [("delegated_ops", "total_ops"), ("delegated", "total"), ("delegated_nodes", "total_nodes")]
    for num, den in pairs:
        if isinstance(delegation.get(num), (int, float)) and delegation.get(den):
            return float(delegation[num]) / float(delegation[den])
    if isinstance(delegation.get("delegated_ops"), (int, float)) and "portable_ops" in delegation:
        total = delegation["delegated_ops"] + (delegation["portable_ops"] or 0)
        return float(delegation["delegated_ops"]) / total if total else None
    return None


def fmt_delegation(delegation: dict | None) -> str:
    cov = delegation_coverage(delegation)
    if cov is not None:
        return f"{100 * cov:.0f}%"
    if isinstance(delegation, dict) and delegation.get("summary"):
        return str(delegation["summary"])
    return "-"


def predicted_latency_ms(row: RunRow) -> float | None:
    """The planner's latency for one inference; None for generation rows (a full-sequence forward
    is not a decode step, so it would compare with nothing measured)."""
    if generation_of(row):
        return None
    value = (row.predicted or {}).get("latency_ms")
    if isinstance(value, dict):
        value = value.get("p50")
    return float(value) if isinstance(value, (int, float)) else None


def table_rows(run: Run) -> list[dict]:
    """One dict of display strings per row, keyed by :data:`TABLE_COLUMNS`."""
    out = []
    for row in run.rows:
        lat = row.latency_ms or {}
        gen = generation_of(row)
        out.append({
            "backend": row.backend,
            "plan": row.plan_name,
            "size": fmt_bytes(row.size_bytes),
            "pred p50": fmt_ms(predicted_latency_ms(row)),
            "p50 ms": fmt_ms(lat.get("p50")),
            "p90 ms": fmt_ms(lat.get("p90")),
            "TTFT ms": fmt_num(gen.get("ttft_ms"), 1) if gen else "",
            "prefill tok/s": fmt_num(gen.get("prefill_tok_s"), 1) if gen else "",
            "decode tok/s": fmt_num(gen.get("decode_tok_s"), 1) if gen else "",
            "KV MB": fmt_num((gen.get("kv_cache_bytes") or 0) / 2**20, 2) if gen else "",
            "peak MB": fmt_num(row.peak_rss_mb, 1),
            "accuracy": "-" if row.accuracy is None else f"{row.accuracy:.4f} {row.metric or ''}".strip(),
            "delegated": fmt_delegation(row.delegation),
            "error": _short_error(row.error),
        })
    return out


def _short_error(error: str | None, limit: int = 60) -> str:
    if not error:
        return ""
    first = error.strip().splitlines()[0]
    return first if len(first) <= limit else first[: limit - 3] + "..."


def render_table(rows: list[dict], columns: list[str]) -> str:
    """Fixed-width text table; empty columns on every row are dropped."""
    if not rows:
        return "(no rows)"
    columns = [c for c in columns if any(str(r.get(c, "")) for r in rows)]
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def text_table(run: Run) -> str:
    """The run as a text table with a one-line header."""
    head = (f"run {run.run_id or '(unsaved)'}: {run.model} on {run.target or '?'} "
            f"(profile {run.profile or '-'}), {run.status}")
    return head + "\n" + render_table(table_rows(run), TABLE_COLUMNS)


def csv_record(run: Run, row: RunRow) -> dict:
    lat = row.latency_ms or {}
    pred = row.predicted or {}
    cov = delegation_coverage(row.delegation)
    return {
        "run_id": run.run_id, "model": run.model, "profile": run.profile, "target": run.target,
        "backend": row.backend, "plan": row.plan_name, "size_bytes": row.size_bytes,
        "predicted_size_bytes": pred.get("size_bytes"), "predicted_latency_ms": predicted_latency_ms(row),
        **{f"latency_{k}_ms": lat.get(k) for k in ("p50", "p90", "p99", "mean", "std", "min", "max")},
        "samples": len(row.latencies_ms or []), "load_ms": row.load_ms,
        "first_inference_ms": row.first_inference_ms, "peak_rss_mb": row.peak_rss_mb,
        "predicted_peak_memory_mb": pred.get("peak_memory_mb"), "metric": row.metric,
        "accuracy": row.accuracy, "predicted_accuracy": pred.get("accuracy"),
        "delegation": "" if cov is None else round(cov, 4), "runtime": row.runtime,
        "runtime_version": row.runtime_version, "threads": row.threads,
        "artifact_sha256": row.artifact_sha256, "error": row.error or "",
        **_generation_record(row),
    }


def _generation_record(row: RunRow) -> dict:
    gen, val = generation_of(row), row.validation or {}
    if not gen:
        return {}
    return {**{k: gen.get(k) for k in ("prompt_tokens", "new_tokens", "ttft_ms", "prefill_tok_s", "decode_tok_s",
                                       "kv_cache_bytes", "model_rss_mb", "token_agreement_eager")},
            "baseline_rss_mb": row.baseline_rss_mb, "perplexity": val.get("ppl_candidate"),
            "perplexity_fp32": val.get("ppl_reference")}


def to_csv(run: Run) -> str:
    """One CSV line per row (raw samples are in the JSON, not here)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in run.rows:
        writer.writerow({k: ("" if v is None else v) for k, v in csv_record(run, row).items()})
    return buf.getvalue()


def summary_row(row: RunRow) -> dict:
    """The compact row of ``edge compare --json``."""
    lat = row.latency_ms or {}
    out = {
        "backend": row.backend,
        "plan": row.plan_name,
        "size_bytes": row.size_bytes,
        "latency_ms": {k: lat.get(k) for k in ("p50", "p90", "p99", "mean", "std")} if lat else None,
        "accuracy": row.accuracy,
        "metric": row.metric,
        "peak_rss_mb": row.peak_rss_mb,
        "predicted": row.predicted or {},
        "delegation": delegation_coverage(row.delegation),
    }
    if generation_of(row):
        out["generation"] = {k: generation_of(row).get(k) for k in GENERATION_FIELDS}
    if row.error:
        out["error"] = row.error
        out["error_type"] = row.error_type
    return out


def summary(run: Run) -> dict:
    """{run_id, model, profile, target, status, rows: [...]} without raw samples."""
    return {"run_id": run.run_id, "model": run.model, "profile": run.profile, "target": run.target,
            "status": run.status, "created_at": run.created_at,
            "rows": [summary_row(r) for r in run.rows]}


def to_json(run: Run) -> str:
    """The full run (raw samples, contexts, plans) as JSON."""
    return json.dumps(run.to_dict(), indent=2, sort_keys=True, default=str)


def write_report_files(run: Run, out_dir: str | Path, plots: bool = True) -> dict:
    """Write results.json, results.csv, report.html and the PNG plots; returns their paths."""
    from .errors import ResultsError
    from .report_html import render_html

    out = Path(out_dir)
    paths = {"json": out / "results.json", "csv": out / "results.csv", "html": out / "report.html"}
    try:
        out.mkdir(parents=True, exist_ok=True)
        images, image_paths = {}, {}
        if plots:
            from .plots import render_plots, write_plots

            images = render_plots(run)
            image_paths = write_plots(run, out / "plots", images)
        _write_atomic(paths["json"], to_json(run))
        _write_atomic(paths["csv"], to_csv(run))
        _write_atomic(paths["html"], render_html(run, images))
    except OSError as exc:
        raise ResultsError(f"could not write the report into {out}: {exc}; check the folder is writable") from exc
    return {**{k: str(v) for k, v in paths.items()}, "plots": {k: str(v) for k, v in image_paths.items()}}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
