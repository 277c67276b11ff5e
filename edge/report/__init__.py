"""Reports of a run: pure functions of a :class:`~edge.runs.Run`, plus the one function
that writes them to disk.

| module | what it holds |
|---|---|
| :mod:`edge.report.format` | number, size and delegation formats, the table's display rows, the column lists |
| :mod:`edge.report.tables` | the text table, CSV, the ``--json`` summary and the full JSON |
| :mod:`edge.report.plots` | PNG plots (matplotlib, imported on first use) |
| :mod:`edge.report.html` | the self-contained HTML page |
| :mod:`edge.report.files` | :func:`write_report_files`: results.json, results.csv, report.html, plots/ |

Each module imports only the ones above it in this table, so there is no import cycle.
The names below are importable from ``edge.report`` directly.
"""
from __future__ import annotations

from .files import report_paths, write_report_files
from .format import (CSV_COLUMNS, GENERATION_COLUMNS, GENERATION_FIELDS, TABLE_COLUMNS, delegation_coverage,
                     fmt_bytes, fmt_delegation, fmt_ms, fmt_num, generation_of, model_rss_mb, predicted_latency_ms,
                     table_rows)
from .html import render_html
from .plots import render_plots, write_plots
from .tables import csv_record, render_table, summary, summary_row, text_table, to_csv, to_json

__all__ = [
    "CSV_COLUMNS", "GENERATION_COLUMNS", "GENERATION_FIELDS", "TABLE_COLUMNS", "csv_record", "delegation_coverage",
    "fmt_bytes", "fmt_delegation", "fmt_ms", "fmt_num", "generation_of", "model_rss_mb", "predicted_latency_ms",
    "render_html", "render_plots", "render_table", "report_paths", "summary", "summary_row", "table_rows",
    "text_table", "to_csv", "to_json", "write_plots", "write_report_files",
]
