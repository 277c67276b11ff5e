"""Differences between two stored runs: per-row deltas and run-context flags.

Two latency numbers only compare when they were measured under the same conditions.
:func:`diff_runs` matches rows by (backend, plan) and raises a flag for every
condition that differs between the runs or makes one of them suspect on its own:

- different CPU frequency governor, CPU frequency (more than 5 % apart), kernel,
  hostname, machine, thread count or runtime version;
- a device that heated up during a run by more than :data:`TEMP_RISE_C` or ran above
  :data:`TEMP_HOT_C` (thermal throttling);
- different targets, profiles or models.
"""
from __future__ import annotations

from .runs import Run, RunRow

TEMP_RISE_C = 10.0
TEMP_HOT_C = 70.0
FREQ_TOLERANCE = 0.05

_SAME_KEYS = ("cpu_governor", "kernel", "hostname", "machine")


def _num(value) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def thermal_flags(context: dict, label: str) -> list[str]:
    """Flags for one bench context on its own: heating during the run, running hot."""
    flags = []
    before, after = _num(context.get("temp_c_before")), _num(context.get("temp_c_after"))
    if before is not None and after is not None and after - before > TEMP_RISE_C:
        flags.append(f"{label}: temperature rose {after - before:.1f} C during the run "
                     f"({before:.1f} -> {after:.1f} C); the device may have throttled")
    hottest = max((t for t in (before, after) if t is not None), default=None)
    if hottest is not None and hottest > TEMP_HOT_C:
        flags.append(f"{label}: device ran at {hottest:.1f} C (above {TEMP_HOT_C:.0f} C); "
                     "expect thermal throttling")
    return flags


def context_flags(ctx_a: dict, ctx_b: dict, label: str = "") -> list[str]:
    """Flags where two bench contexts differ in a way that changes latency."""
    prefix = f"{label}: " if label else ""
    flags = []
    for key in _SAME_KEYS:
        va, vb = ctx_a.get(key), ctx_b.get(key)
        if va is not None and vb is not None and va != vb:
            flags.append(f"{prefix}{key} differs: {va} vs {vb}")
    fa, fb = _num(ctx_a.get("cpu_freq_khz")), _num(ctx_b.get("cpu_freq_khz"))
    if fa and fb and abs(fa - fb) / max(fa, fb) > FREQ_TOLERANCE:
        flags.append(f"{prefix}cpu_freq_khz differs: {fa:.0f} vs {fb:.0f}")
    ta, tb = _num(ctx_a.get("temp_c_before")), _num(ctx_b.get("temp_c_before"))
    if ta is not None and tb is not None and abs(ta - tb) > TEMP_RISE_C:
        flags.append(f"{prefix}starting temperature differs: {ta:.1f} vs {tb:.1f} C")
    return flags


def _row_flags(ra: RunRow, rb: RunRow, label: str) -> list[str]:
    flags = context_flags(ra.context or {}, rb.context or {}, label)
    for key in ("threads", "runtime", "runtime_version", "artifact_sha256"):
        va, vb = getattr(ra, key), getattr(rb, key)
        if va is not None and vb is not None and va != vb:
            what = "artifact differs" if key == "artifact_sha256" else f"{key} differs"
            flags.append(f"{label}: {what}: {va} vs {vb}" if key != "artifact_sha256"
                         else f"{label}: {what} ({str(va)[:12]} vs {str(vb)[:12]})")
    flags += thermal_flags(ra.context or {}, f"{label} in A")
    flags += thermal_flags(rb.context or {}, f"{label} in B")
    return flags


def _measures(row: RunRow) -> dict:
    lat = row.latency_ms or {}
    gen = row.generation if isinstance(row.generation, dict) else {}
    return {"p50_ms": lat.get("p50"), "p90_ms": lat.get("p90"), "size_bytes": row.size_bytes,
            "accuracy": row.accuracy, "peak_rss_mb": row.peak_rss_mb, "error": row.error,
            **({"ttft_ms": gen.get("ttft_ms"), "prefill_tok_s": gen.get("prefill_tok_s"),
                "decode_tok_s": gen.get("decode_tok_s")} if gen else {})}


_PCT_KEYS = ("p50_ms", "p90_ms", "size_bytes", "peak_rss_mb", "ttft_ms", "prefill_tok_s", "decode_tok_s")


def _deltas(ma: dict, mb: dict) -> dict:
    out = {}
    keys = ["p50_ms", "p90_ms", "size_bytes", "accuracy", "peak_rss_mb"]
    keys += [k for k in ("ttft_ms", "prefill_tok_s", "decode_tok_s") if k in ma or k in mb]
    for key in keys:
        va, vb = ma.get(key), mb.get(key)
        if va is None or vb is None:
            out[key] = None
            continue
        out[key] = vb - va
        if key in _PCT_KEYS and va:
            out[key.rsplit("_", 1)[0] + "_pct"] = 100.0 * (vb - va) / va
    return out


def diff_runs(a: Run, b: Run) -> dict:
    """``b`` against ``a``: {a, b, rows: [...], flags: [...], comparable}."""
    flags = []
    for key in ("model", "target", "profile"):
        va, vb = getattr(a, key), getattr(b, key)
        if va != vb:
            flags.append(f"{key} differs: {va} vs {vb}")
    flags += context_flags((a.context or {}).get("host", {}), (b.context or {}).get("host", {}), "host")
    index_b = {(r.backend, r.plan_name): r for r in b.rows}
    seen, rows = set(), []
    for ra in a.rows:
        key = (ra.backend, ra.plan_name)
        rb = index_b.get(key)
        label = f"{ra.backend}/{ra.plan_name}"
        entry = {"backend": ra.backend, "plan_name": ra.plan_name, "a": _measures(ra)}
        if rb is None:
            entry.update(status="only_a", b=None, delta={}, flags=[])
        else:
            seen.add(key)
            row_flags = _row_flags(ra, rb, label)
            entry.update(status="both", b=_measures(rb), delta=_deltas(_measures(ra), _measures(rb)),
                         flags=row_flags)
            flags += row_flags
        rows.append(entry)
    for rb in b.rows:
        if (rb.backend, rb.plan_name) not in seen:
            rows.append({"backend": rb.backend, "plan_name": rb.plan_name, "a": None, "b": _measures(rb),
                         "status": "only_b", "delta": {}, "flags": []})
    unique = list(dict.fromkeys(flags))
    return {"a": a.run_id, "b": b.run_id, "rows": rows, "flags": unique, "comparable": not unique}
