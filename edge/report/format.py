"""Formatting shared by every report: number and size formats, delegation coverage, the
predicted latency of a row, the display rows of the results table and the column lists.

Pure functions of a :class:`~edge.runs.Run` and its rows; :mod:`edge.report.tables`,
:mod:`edge.report.plots` and :mod:`edge.report.html` build on them.
"""
from __future__ import annotations

from ..errors import first_line

from ..runs import Run, RunRow

# results.csv, one line per row
CSV_COLUMNS = [
    "run_id", "model", "profile", "target", "backend", "plan", "size_bytes",
    "predicted_size_bytes", "predicted_latency_ms", "latency_p50_ms", "latency_p90_ms",
    "latency_p99_ms", "latency_mean_ms", "latency_std_ms", "latency_min_ms", "latency_max_ms",
    "samples", "load_ms", "first_inference_ms", "peak_rss_mb", "predicted_peak_memory_mb",
    # the peak's two parts, measured beside predicted: the runtime alone (baseline RSS) and the model's share
    "baseline_rss_mb", "predicted_runtime_memory_mb", "model_rss_mb", "predicted_model_memory_mb",
    "metric", "accuracy", "predicted_accuracy", "delegation", "runtime", "runtime_version",
    "threads", "artifact_sha256", "error",
    # language models (empty otherwise)
    "prompt_tokens", "new_tokens", "ttft_ms", "prefill_tok_s", "decode_tok_s", "kv_cache_bytes",
    "token_agreement_eager", "perplexity", "perplexity_fp32",
]

# the text and HTML results table (see table_rows)
TABLE_COLUMNS = ["backend", "plan", "size", "pred p50", "p50 ms", "p90 ms", "TTFT ms", "prefill tok/s",
                 "decode tok/s", "KV MB", "peak MB", "accuracy", "delegated", "error"]
# the generation block of a language-model row in `edge compare --json`
GENERATION_FIELDS = ("prompt_tokens", "new_tokens", "ttft_ms", "prefill_tok_s", "decode_tok_s", "kv_cache_bytes",
                     "model_rss_mb", "token_agreement_eager", "prefill_mode")

# the generation columns of TABLE_COLUMNS (blank for other models, so the HTML drops them when empty)
GENERATION_COLUMNS = ("TTFT ms", "prefill tok/s", "decode tok/s", "KV MB")


def generation_of(row: RunRow) -> dict:
    """A language-model row's generation figures (empty for other models)."""
    return row.generation if isinstance(row.generation, dict) else {}


def model_rss_mb(row: RunRow) -> float | None:
    """What the model added to the runtime's RSS on the device: peak - baseline (None unless both are known)."""
    if row.peak_rss_mb is None or row.baseline_rss_mb is None:
        return None
    return float(row.peak_rss_mb) - float(row.baseline_rss_mb)


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
    """``value`` with ``digits`` decimals, ``-`` when missing."""
    return "-" if value is None else f"{float(value):.{digits}f}"


def fmt_ms(value) -> str:
    """Milliseconds with precision to match: 123.4, 12.35, 0.0123."""
    if value is None:
        return "-"
    value = float(value)
    return f"{value:.1f}" if value >= 100 else f"{value:.2f}" if value >= 1 else f"{value:.4f}"


def delegation_coverage(delegation: dict | None) -> float | None:
    """Share of the graph a backend handed to its accelerated path (0..1), when its manifest says.

    The one shape backends write: ``{"coverage": fraction, ...}`` (ExecuTorch's XNNPACK summary).
    """
    if not isinstance(delegation, dict) or not isinstance(delegation.get("coverage"), (int, float)):
        return None
    return float(delegation["coverage"])


def fmt_delegation(delegation: dict | None) -> str:
    """Delegation coverage as ``87%``, else the backend's own summary, else ``-``."""
    cov = delegation_coverage(delegation)
    if cov is not None:
        return f"{100 * cov:.0f}%"
    if isinstance(delegation, dict) and delegation.get("summary"):
        return str(delegation["summary"])
    return "-"


def predicted_latency_ms(row: RunRow) -> float | None:
    """The planner's latency for one inference; for language models one decode step (the plan's
    prediction carries a ``generation`` block then), which is what the device measures per token."""
    if generation_of(row) and not (row.predicted or {}).get("generation"):
        return None  # a plan from before generation predictions: a full forward, not a decode step
    value = (row.predicted or {}).get("latency_ms")
    if isinstance(value, dict):
        value = value.get("p50")
    return float(value) if isinstance(value, (int, float)) else None


def fmt_predicted(row: RunRow) -> str:
    """The predicted latency with the plan's range when it has one: ``2.28 (1.90-2.74)``."""
    value = predicted_latency_ms(row)
    span = (row.predicted or {}).get("latency_range_ms")
    if value is None or not isinstance(span, dict) or (row.predicted or {}).get("generation"):
        return fmt_ms(value)
    return f"{fmt_ms(value)} ({fmt_ms(span.get('low'))}-{fmt_ms(span.get('high'))})"


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
            "pred p50": fmt_predicted(row),
            "p50 ms": fmt_ms(lat.get("p50")),
            "p90 ms": fmt_ms(lat.get("p90")),
            "TTFT ms": fmt_num(gen.get("ttft_ms"), 1) if gen else "",
            "prefill tok/s": fmt_num(gen.get("prefill_tok_s"), 1) if gen else "",
            "decode tok/s": fmt_num(gen.get("decode_tok_s"), 1) if gen else "",
            "KV MB": fmt_num((gen.get("kv_cache_bytes") or 0) / 2**20, 2) if gen else "",
            "peak MB": fmt_num(row.peak_rss_mb, 1),
            "accuracy": "-" if row.accuracy is None else f"{row.accuracy:.4f} {row.metric or ''}".strip(),
            "delegated": fmt_delegation(row.delegation),
            "error": first_line(row.error, 60),
        })
    return out


