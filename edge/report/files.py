"""The report's files: results.json, results.csv, report.html and the PNG plots of a run.

The one place in :mod:`edge.report` that writes.
"""
from __future__ import annotations

from ..fileio import write_atomic

from pathlib import Path

from ..errors import ResultsError
from ..runs import Run
from .html import render_html
from .plots import render_plots, write_plots
from .tables import to_csv, to_json


def report_paths(out_dir: str | Path) -> dict[str, Path]:
    """Where :func:`write_report_files` writes the JSON, CSV and HTML of a run."""
    out = Path(out_dir)
    return {"json": out / "results.json", "csv": out / "results.csv", "html": out / "report.html"}


def write_report_files(run: Run, out_dir: str | Path, plots: bool = True) -> dict:
    """Write results.json, results.csv, report.html and the PNG plots; returns their paths."""
    out = Path(out_dir)
    paths = report_paths(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        images, image_paths = {}, {}
        if plots:
            images = render_plots(run)
            image_paths = write_plots(run, out / "plots", images)
        write_atomic(paths["json"], to_json(run))
        write_atomic(paths["csv"], to_csv(run))
        write_atomic(paths["html"], render_html(run, images))
    except OSError as exc:
        raise ResultsError(f"could not write the report into {out}: {exc}; check the folder is writable") from exc
    return {**{k: str(v) for k, v in paths.items()}, "plots": {k: str(v) for k, v in image_paths.items()}}
