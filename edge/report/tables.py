"""The run as text: the fixed-width results table, CSV and JSON. Pure functions of a
:class:`~edge.runs.Run`; :mod:`edge.report.files` writes them to disk.
"""
from __future__ import annotations

import csv
import io
import json

from ..runs import Run, RunRow
from .format import (CSV_COLUMNS, GENERATION_FIELDS, TABLE_COLUMNS, delegation_coverage, generation_of,
                     model_rss_mb, predicted_latency_ms, table_rows)


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
    """One line of results.csv (keys of :data:`CSV_COLUMNS`; generation keys only for language models)."""
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
        "predicted_peak_memory_mb": pred.get("peak_memory_mb"), "baseline_rss_mb": row.baseline_rss_mb,
        "predicted_runtime_memory_mb": pred.get("runtime_memory_mb"), "model_rss_mb": model_rss_mb(row),
        "predicted_model_memory_mb": pred.get("model_memory_mb"), "metric": row.metric,
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
                                       "kv_cache_bytes", "token_agreement_eager")},
            "perplexity": val.get("ppl_candidate"),
            "perplexity_fp32": val.get("ppl_reference")}


def to_csv(run: Run) -> str:
    """One CSV line per row (raw samples are in the JSON, not here)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in run.rows:
        writer.writerow({k: csv_cell(v) for k, v in csv_record(run, row).items()})
    return buf.getvalue()


# A text cell starting with one of these is a formula to a spreadsheet (device output, model
# names and errors end up here), so it is written with a leading apostrophe.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A CSV value: None as empty, text that a spreadsheet would run as a formula quoted as text."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


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
        "baseline_rss_mb": row.baseline_rss_mb,
        "model_rss_mb": model_rss_mb(row),
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
