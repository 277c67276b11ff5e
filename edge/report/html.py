"""A self-contained HTML report of a run: one file, images as data URIs, no scripts,
no external resources, so it can be mailed or attached to a ticket and opened offline.
"""
from __future__ import annotations

import base64
import json
from html import escape

from ..run_diff import thermal_flags
from ..runs import Run
from .format import (GENERATION_COLUMNS, TABLE_COLUMNS, delegation_coverage, fmt_bytes, fmt_delegation, fmt_ms,
                     fmt_num, fmt_predicted, model_rss_mb, table_rows)
from .plots import render_plots

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; color: #1b1f24; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.8em;
     border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; }
.meta { color: #57606a; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.error td { background: #fff1f0; }
.status-ok { color: #1a7f37; } .status-partial { color: #9a6700; } .status-failed { color: #cf222e; }
.flag { color: #9a6700; } img { max-width: 100%; border: 1px solid #d0d7de; margin: 0.5em 0; }
.scroll { overflow-x: auto; } pre { background: #f6f8fa; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
"""

_PLOT_TITLES = {
    "latency": "Latency per backend (raw samples)",
    "tradeoff": "Latency vs size vs accuracy",
    "predicted": "Predicted vs measured latency",
    "generation": "Generation: decode tokens/s and time to first token",
}


def _e(value) -> str:
    return escape("" if value is None else str(value))


def _table(headers: list[str], rows: list[list], classes: list[str] | None = None,
           table_id: str = "") -> str:
    attr = f' id="{table_id}"' if table_id else ""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = "".join(
            f'<td class="num">{_e(v)}</td>' if isinstance(v, (int, float)) else f"<td>{_e(v)}</td>"
            for v in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    return (f'<div class="scroll"><table{attr}><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _summary(run: Run) -> str:
    rows = table_rows(run)
    cols = [c for c in TABLE_COLUMNS if any(r[c] for r in rows) or c not in ("error", *GENERATION_COLUMNS)]
    return _table(cols, [[r[c] for c in cols] for r in rows],
                  ["error" if r.error else "" for r in run.rows], "summary")


def _details(run: Run) -> str:
    headers = ["backend", "plan", "size (bytes)", "p50", "p90", "p99", "mean", "std", "min", "max",
               "samples", "load ms", "first inference ms", "runtime", "threads", "sha256"]
    rows = []
    for r in run.rows:
        lat = r.latency_ms or {}
        rows.append([r.backend, r.plan_name, r.size_bytes if r.size_bytes is not None else "-",
                     *[fmt_ms(lat.get(k)) for k in ("p50", "p90", "p99", "mean", "std", "min", "max")],
                     len(r.latencies_ms or []), fmt_num(r.load_ms, 1), fmt_num(r.first_inference_ms, 2),
                     f"{r.runtime or '-'} {r.runtime_version or ''}".strip(), r.threads or "-",
                     (r.artifact_sha256 or "-")[:12]])
    return _table(headers, rows, table_id="details")


def _predicted(run: Run) -> str:
    # memory as the device sees it: the runtime alone (the runner's baseline RSS, before the model
    # loads) and what the model adds (peak - baseline), each beside the planner's prediction
    headers = ["backend", "plan", "predicted size", "measured size", "predicted latency ms",
               "measured p50 ms", "predicted peak MB", "measured peak MB", "predicted runtime MB",
               "measured runtime MB", "predicted model MB", "measured model MB", "predicted accuracy",
               "measured accuracy", "delegated"]
    rows = []
    for r in run.rows:
        p = r.predicted or {}
        rows.append([r.backend, r.plan_name, fmt_bytes(p.get("size_bytes")), fmt_bytes(r.size_bytes),
                     fmt_predicted(r), fmt_ms((r.latency_ms or {}).get("p50")),
                     fmt_num(p.get("peak_memory_mb"), 1), fmt_num(r.peak_rss_mb, 1),
                     fmt_num(p.get("runtime_memory_mb"), 1), fmt_num(r.baseline_rss_mb, 1),
                     fmt_num(p.get("model_memory_mb"), 1), fmt_num(model_rss_mb(r), 1),
                     fmt_num(p.get("accuracy"), 4), fmt_num(r.accuracy, 4), fmt_delegation(r.delegation)])
    return _table(headers, rows, table_id="predicted")


def _generation(run: Run) -> str:
    rows = [r for r in run.rows if isinstance(r.generation, dict) and r.generation]
    if not rows:
        return ""
    headers = ["backend", "plan", "prompt", "new", "prefill", "TTFT ms", "prefill tok/s", "decode tok/s",
               "KV cache", "peak RSS MB", "runtime RSS MB", "model RSS MB", "perplexity (fp32)",
               "tokens = host", "tokens = eager fp32", "tokens (first 12)"]
    body = []
    for r in rows:
        g, v = r.generation, r.validation or {}
        pct = lambda x: "-" if x is None else f"{x:.0%}"  # noqa: E731
        ppl = "-" if v.get("ppl_candidate") is None else f"{v['ppl_candidate']:.3f} ({v.get('ppl_reference', 0):.3f})"
        body.append([r.backend, r.plan_name, g.get("prompt_tokens"), g.get("new_tokens"), g.get("prefill_mode", "-"),
                     fmt_num(g.get("ttft_ms"), 1), fmt_num(g.get("prefill_tok_s"), 1), fmt_num(g.get("decode_tok_s"), 1),
                     fmt_bytes(g.get("kv_cache_bytes")), fmt_num(r.peak_rss_mb, 1), fmt_num(r.baseline_rss_mb, 1),
                     fmt_num(g.get("model_rss_mb"), 1), ppl, pct(g.get("token_agreement_host")),
                     pct(g.get("token_agreement_eager")), " ".join(str(t) for t in (g.get("tokens") or [])[:12])])
    return ('<h2 id="generation">Generation</h2><p class="meta">greedy decoding of token ids on the device; '
            "agreement counts tokens up to the first difference</p>" + _table(headers, body, table_id="generation"))


def _errors(run: Run) -> str:
    failed = [r for r in run.rows if r.error]
    if not failed:
        return ""
    items = "".join(f"<li><b>{_e(r.backend)}/{_e(r.plan_name)}</b> ({_e(r.error_type)}): "
                    f"<pre>{_e(r.error)}</pre></li>" for r in failed)
    return f'<h2 id="errors">Errors</h2><ul>{items}</ul>'


def _plans(run: Run) -> str:
    parts = []
    for r in run.rows:
        reasons = "".join(f"<li>{_e(x)}</li>" for x in (r.reasons or []))
        reasons_html = f"<ul>{reasons}</ul>" if reasons else "<p class=meta>no reasons recorded</p>"
        plan = json.dumps(r.plan, indent=2, sort_keys=True, default=str) if r.plan else "fp32, no compression"
        cov = delegation_coverage(r.delegation)
        deleg = "" if r.delegation is None else (
            f"<p>Delegation{'' if cov is None else f' ({100 * cov:.0f}%)'}:</p>"
            f"<pre>{_e(json.dumps(r.delegation, indent=2, sort_keys=True, default=str))}</pre>")
        parts.append(f"<h3>{_e(r.backend)} / {_e(r.plan_name)}</h3>{reasons_html}"
                     f"<details><summary>plan</summary><pre>{_e(plan)}</pre></details>{deleg}")
    return f'<h2 id="plans">Plans and reasons</h2>{"".join(parts)}'


def _facts(facts: dict) -> list:
    """Model, SoC and the hottest thermal zone a device reported (``-`` where it has none)."""
    zones = facts.get("thermal_c") or {}
    hottest = max(zones.items(), key=lambda kv: kv[1]) if zones else None
    return [facts.get("product_model") or "-", facts.get("soc_model") or facts.get("board_platform") or "-",
            f"{hottest[0]} {hottest[1]:.1f} °C" if hottest else "-"]


def _context(run: Run) -> str:
    host = (run.context or {}).get("host", {})
    keys = ["hostname", "kernel", "machine", "python", "cpu_count", "cpu_governor", "cpu_freq_khz",
            "temp_c_before", "temp_c_after"]
    device_rows = [[f"{r.backend}/{r.plan_name}", *[(r.context or {}).get(k, "-") for k in keys],
                    *_facts((r.context or {}).get("device_facts") or {})]
                   for r in run.rows if r.context]
    flags = [f for r in run.rows for f in thermal_flags(r.context or {}, f"{r.backend}/{r.plan_name}")]
    flag_html = "".join(f'<li class="flag">{_e(f)}</li>' for f in flags)
    host_rows = [[k, json.dumps(v, default=str) if isinstance(v, (dict, list)) else v]
                 for k, v in sorted(host.items())]
    args_rows = [[k, json.dumps(v, default=str)] for k, v in sorted((run.args or {}).items())]
    return (f'<h2 id="context">Run context</h2>{f"<ul>{flag_html}</ul>" if flags else ""}'
            f"<h3>Device (per row, from the runner)</h3>"
            f"{_table(['row', *keys, 'model', 'SoC', 'hottest zone'], device_rows, table_id='device-context') if device_rows else '-'}"
            f"<h3>Host</h3>{_table(['key', 'value'], host_rows, table_id='host-context')}"
            f"<h3>Arguments</h3>{_table(['argument', 'value'], args_rows, table_id='arguments')}")


def _notes(run: Run) -> str:
    notes = "".join(f'<li class="flag">{_e(n)}</li>' for n in run.extra.get("notes") or [])
    return f'<ul id="notes">{notes}</ul>' if notes else ""


def _images(images: dict[str, bytes]) -> str:
    if not images:
        return '<h2 id="plots">Plots</h2><p class="meta">no measurements to plot</p>'
    parts = []
    for name, png in images.items():
        data = base64.b64encode(png).decode("ascii")
        title = _PLOT_TITLES.get(name, name)
        parts.append(f'<figure><img id="plot-{_e(name)}" alt="{_e(title)}" '
                     f'src="data:image/png;base64,{data}"><figcaption>{_e(title)}</figcaption></figure>')
    return '<h2 id="plots">Plots</h2>' + "".join(parts)


def render_html(run: Run, images: dict[str, bytes] | None = None) -> str:
    """The whole report as one HTML document (plots rendered here unless given)."""
    if images is None:
        images = render_plots(run)
    ok = sum(1 for r in run.rows if r.ok)
    title = f"edge compare: {run.model} on {run.target}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>"
        f'<p class="meta">run <code>{_e(run.run_id or "(unsaved)")}</code> &middot; {_e(run.created_at)} '
        f"&middot; profile {_e(run.profile or '-')} &middot; "
        f'<span class="status-{_e(run.status)}">{_e(run.status)}</span> ({ok}/{len(run.rows)} rows ok)</p>'
        f'<h2 id="results">Results</h2>{_notes(run)}{_summary(run)}{_errors(run)}{_generation(run)}'
        f"{_images(images)}"
        f'<h2 id="predicted-vs-measured">Predicted vs measured</h2>{_predicted(run)}'
        f'<h2 id="latency-details">Latency details (ms)</h2>{_details(run)}'
        f"{_plans(run)}{_context(run)}"
        f'<p class="meta">generated by edge from the results store; raw samples are in results.json</p>'
        f"</body></html>"
    )


__all__ = ["render_html"]
