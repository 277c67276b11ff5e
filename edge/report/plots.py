"""PNG plots of a run (matplotlib, Agg backend). Each plot function returns PNG bytes,
or ``None`` when the run has nothing to draw for it.

- ``latency``: latency distribution per backend/plan from the raw samples (box plot
  with the individual samples over it);
- ``tradeoff``: latency vs size, accuracy as colour and label;
- ``predicted``: the planner's predicted latency against the measured p50, with y = x.
- ``generation``: language models: decode tokens/s and time to first token.
"""
from __future__ import annotations

import io
from pathlib import Path

from ..runs import Run, RunRow
from .format import predicted_latency_ms


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    # labels carry device output and user names: text is text ("$...$" is not math to render)
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def _label(row: RunRow) -> str:
    return row.backend if row.plan_name in ("", None) else f"{row.backend}\n{row.plan_name}"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def _log_if_wide(ax, axis: str, values: list[float], ratio: float = 20.0) -> bool:
    """Log scale when the values span more than ``ratio`` (one slow backend would flatten the rest)."""
    positive = [v for v in values if v > 0]
    if not positive or max(positive) / min(positive) <= ratio:
        return False
    if axis in ("y", "both"):
        ax.set_yscale("log")
    if axis in ("x", "both"):
        ax.set_xscale("log")
    return True


def plot_latency(run: Run) -> bytes | None:
    """Box plot of raw latency samples per row, the samples jittered over it."""
    rows = [r for r in run.rows if r.ok and r.latencies_ms]
    if not rows:
        return None
    plt = _pyplot()
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(rows) + 2), 4.0))
    data = [np.asarray(r.latencies_ms, dtype=float) for r in rows]
    ax.boxplot(data, showfliers=False, widths=0.5)
    # Plan names are long: slant them so neighbouring labels do not run into each other.
    ax.set_xticks(range(1, len(rows) + 1), [_label(r) for r in rows], rotation=20, ha="right",
                  fontsize=8)
    rng = np.random.default_rng(0)
    for i, samples in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(samples)), samples, s=6, alpha=0.4, color="tab:blue")
    _log_if_wide(ax, "y", [float(v) for d in data for v in d])
    ax.set_ylabel("latency per inference (ms)")
    ax.set_title(f"{run.model} on {run.target}: latency ({len(data[0])} samples per backend)")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_tradeoff(run: Run) -> bytes | None:
    """Latency (p50) against artifact size; accuracy as colour and in the labels."""
    rows = [r for r in run.rows if r.ok and r.size_bytes and (r.latency_ms or {}).get("p50") is not None]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    xs = [r.size_bytes / 1e6 for r in rows]
    ys = [r.latency_ms["p50"] for r in rows]
    accs = [r.accuracy if r.accuracy is not None else float("nan") for r in rows]
    points = ax.scatter(xs, ys, c=accs, cmap="viridis", s=80, edgecolors="black",
                        vmin=min([a for a in accs if a == a], default=0.0), vmax=1.0)
    for r, x, y in zip(rows, xs, ys):
        acc = "" if r.accuracy is None else f" ({r.accuracy:.3f})"
        ax.annotate(f"{r.backend}/{r.plan_name}{acc}", (x, y), textcoords="offset points", xytext=(6, 6),
                    fontsize=8)
    fig.colorbar(points, ax=ax, label=f"accuracy ({rows[0].metric or 'score'}, 1.0 = fp32)")
    ax.margins(x=0.25, y=0.15)
    ax.set_xlabel("artifact size (MB)")
    ax.set_ylabel("latency p50 (ms)")
    ax.set_title("latency vs size vs accuracy")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_predicted(run: Run) -> bytes | None:
    """Predicted latency against measured p50 (y = x is a perfect cost model)."""
    pairs = [(r, predicted_latency_ms(r), (r.latency_ms or {}).get("p50")) for r in run.rows if r.ok]
    pairs = [(r, p, m) for r, p, m in pairs if p is not None and m is not None]
    if not pairs:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    xs = [p for _, p, _ in pairs]
    ys = [m for _, _, m in pairs]
    top = max(xs + ys) * 1.15
    low = min(xs + ys) / 1.5 if _log_if_wide(ax, "both", xs + ys) else 0.0
    ax.plot([low, top], [low, top], linestyle="--", color="gray", label="y = x")
    ax.scatter(xs, ys, s=60, color="tab:orange", edgecolors="black", zorder=3)
    ax.set_xlim(low, top)
    ax.set_ylim(low, top)
    for (r, x, y) in pairs:
        ax.annotate(f"{r.backend}/{r.plan_name}", (x, y), textcoords="offset points", xytext=(6, -10),
                    fontsize=8)
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("measured latency p50 (ms)")
    ax.set_title(f"predicted vs measured on {run.target}")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_generation(run: Run) -> bytes | None:
    """Language models: decode tokens/s and time to first token per backend/plan, side by side."""
    rows = [r for r in run.rows if r.ok and isinstance(r.generation, dict) and r.generation.get("decode_tok_s")]
    if not rows:
        return None
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(7.0, 1.6 * len(rows) + 4), 4.0))
    labels = [_label(r) for r in rows]
    xs = range(len(rows))
    ax1.bar(xs, [r.generation["decode_tok_s"] for r in rows], color="tab:green")
    ax1.set_ylabel("decode tokens/s (higher is better)")
    ax2.bar(xs, [r.generation.get("ttft_ms") or 0.0 for r in rows], color="tab:orange")
    ax2.set_ylabel("time to first token (ms, lower is better)")
    for ax in (ax1, ax2):
        ax.set_xticks(list(xs), labels, rotation=20, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    gen = rows[0].generation
    fig.suptitle(f"{run.model} on {run.target}: prompt {gen.get('prompt_tokens')} tokens, "
                 f"{gen.get('new_tokens')} generated")
    return _png(fig)


PLOTS = {"latency": plot_latency, "tradeoff": plot_tradeoff, "predicted": plot_predicted,
         "generation": plot_generation}


def render_plots(run: Run) -> dict[str, bytes]:
    """PNG bytes per plot name, for the plots the run has data for."""
    out = {}
    for name, fn in PLOTS.items():
        png = fn(run)
        if png is not None:
            out[name] = png
    return out


def write_plots(run: Run, out_dir: str | Path, images: dict[str, bytes] | None = None) -> dict[str, Path]:
    """Write ``<name>.png`` files into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, png in (images if images is not None else render_plots(run)).items():
        paths[name] = out / f"{name}.png"
        paths[name].write_bytes(png)
    return paths
