"""Reports: text table, CSV, JSON, PNG plots, and the HTML page rendered in headless Chromium."""
import base64
import csv
import io
import json
import re
import shutil
import subprocess

import pytest
from PIL import Image

from edge.cli import main
from edge.report import delegation_coverage, fmt_bytes, summary, text_table, to_csv, to_json, write_report_files
from edge.report.html import render_html
from edge.report.plots import render_plots
from edge.results import ResultsStore, Run, RunRow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _row(backend, p50, acc, size, plan_name="fp32", **kw):
    samples = [p50 * (1 + 0.05 * ((i * 7) % 11 - 5) / 5) for i in range(40)]
    return RunRow(backend=backend, plan_name=plan_name, size_bytes=size,
                  latency_ms={"p50": p50, "p90": p50 * 1.04, "p99": p50 * 1.05, "mean": p50, "std": p50 * 0.03,
                              "min": min(samples), "max": max(samples)},
                  latencies_ms=samples, accuracy=acc, metric="top1", peak_rss_mb=60.0 + p50,
                  predicted={"latency_ms": p50 * 1.2, "size_bytes": size, "peak_memory_mb": 50.0,
                             "accuracy": acc}, delegation={"delegated_nodes": 9, "portable_nodes": 1, "coverage": 0.9},
                  runtime=backend, runtime_version="1.0", threads=2, reasons=[f"{backend}: fastest <fit>"],
                  context={"hostname": "pi", "cpu_governor": "performance", "temp_c_before": 41.0,
                           "temp_c_after": 44.5}, **kw)


@pytest.fixture(scope="module")
def run():
    rows = [_row("torchscript", 3.1, 1.0, 120_000), _row("executorch", 1.9, 0.996, 40_000, plan_name="int8"),
            _row("tflite", 2.4, 0.99, 45_000),
            RunRow(backend="tflite", plan_name="int4", error="ExportError: <int4> not supported\nmore",
                   error_type="UnsupportedError", exit_code=4)]
    return Run(model="tiny-cnn", profile="raspberry-pi-4-4gb", target="local", status="partial",
               run_id="20240101-000000-abcd", created_at="2024-01-01T00:00:00+00:00",
               args={"iterations": 40}, context={"host": {"hostname": "laptop", "kernel": "6.1"}}, rows=rows)


def test_text_table_has_every_row_and_error(run):
    text = text_table(run)
    lines = text.splitlines()
    assert "tiny-cnn on local" in lines[0] and "partial" in lines[0]
    assert len(lines) == 1 + 2 + 4
    assert "120.00 kB" in text and "1.90" in text and "0.0000" not in text and "0.9960 top1" in text and "90%" in text
    assert "ExportError: <int4> not supported" in text and "more" not in text


def test_csv_and_json(run):
    records = list(csv.DictReader(io.StringIO(to_csv(run))))
    assert [r["backend"] for r in records] == ["torchscript", "executorch", "tflite", "tflite"]
    assert float(records[1]["latency_p50_ms"]) == 1.9 and records[1]["plan"] == "int8"
    assert float(records[1]["predicted_latency_ms"]) == pytest.approx(1.9 * 1.2)
    assert records[3]["error"].startswith("ExportError") and records[3]["latency_p50_ms"] == ""
    full = json.loads(to_json(run))
    assert full["rows"][0]["latencies_ms"] == run.rows[0].latencies_ms
    assert Run.from_dict(full).to_dict() == run.to_dict()
    compact = summary(run)
    assert set(compact["rows"][0]["latency_ms"]) == {"p50", "p90", "p99", "mean", "std"}
    assert compact["rows"][3]["error"] and "error" not in compact["rows"][0]


def test_memory_is_predicted_beside_measured_in_its_two_parts():
    row = _row("executorch", 1.9, 0.996, 40_000, baseline_rss_mb=40.0)  # measured peak 61.9 MB
    row.predicted.update(runtime_memory_mb=35.0, model_memory_mb=15.0)  # predicted peak 50 MB
    before = _row("tflite", 2.4, 0.99, 45_000)  # a row stored before the split: no baseline, no parts
    run = Run(model="tiny-cnn", target="local", rows=[row, before])
    new, old = csv.DictReader(io.StringIO(to_csv(run)))
    assert float(new["baseline_rss_mb"]) == 40.0 and float(new["predicted_runtime_memory_mb"]) == 35.0
    assert float(new["model_rss_mb"]) == pytest.approx(21.9) and float(new["predicted_model_memory_mb"]) == 15.0
    assert float(new["peak_rss_mb"]) == pytest.approx(61.9) and float(new["predicted_peak_memory_mb"]) == 50.0
    assert [old[k] for k in ("baseline_rss_mb", "predicted_runtime_memory_mb", "model_rss_mb",
                             "predicted_model_memory_mb")] == ["", "", "", ""]
    assert float(old["predicted_peak_memory_mb"]) == 50.0
    compact = summary(run)["rows"][0]
    assert compact["baseline_rss_mb"] == 40.0 and compact["model_rss_mb"] == pytest.approx(21.9)
    assert compact["predicted"]["runtime_memory_mb"] == 35.0
    table = re.search(r'<table id="predicted">.*?</table>', render_html(run, images={}), re.S).group(0)
    headers = re.findall(r"<th>(.*?)</th>", table)
    new_cells, old_cells = (dict(zip(headers, re.findall(r"<td[^>]*>(.*?)</td>", tr)))
                            for tr in re.findall(r"<tbody>.*?</tbody>", table, re.S)[0].split("</tr>")[:2])
    assert (new_cells["predicted runtime MB"], new_cells["measured runtime MB"]) == ("35.0", "40.0")
    assert (new_cells["predicted model MB"], new_cells["measured model MB"]) == ("15.0", "21.9")
    assert (new_cells["predicted peak MB"], new_cells["measured peak MB"]) == ("50.0", "61.9")
    assert (old_cells["predicted model MB"], old_cells["measured model MB"]) == ("-", "-")


def test_formatting_helpers():
    assert fmt_bytes(999) == "999 B" and fmt_bytes(1_500_000) == "1.50 MB" and fmt_bytes(None) == "-"
    assert delegation_coverage({"delegated_nodes": 3, "portable_nodes": 1, "coverage": 0.75}) == 0.75
    assert delegation_coverage({"coverage": 0.5}) == 0.5 and delegation_coverage(None) is None


def _assert_png(png: bytes, min_w=300, min_h=250):
    img = Image.open(io.BytesIO(png)).convert("RGB")
    assert img.width >= min_w and img.height >= min_h
    colours = img.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 20, "the image is (nearly) blank"
    return img


def test_plots_are_real_pngs(run):
    images = render_plots(run)
    assert set(images) == {"latency", "tradeoff", "predicted"}
    for png in images.values():
        _assert_png(png)
    empty = Run(model="m", rows=[RunRow(backend="tflite", error="x")])
    assert render_plots(empty) == {}


@pytest.fixture(scope="module")
def report_dir(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    paths = write_report_files(run, out)
    return out, paths


def test_report_files_written(report_dir):
    out, paths = report_dir
    assert set(paths["plots"]) == {"latency", "tradeoff", "predicted"}
    for p in paths["plots"].values():
        _assert_png(open(p, "rb").read())
    html = open(paths["html"]).read()
    assert not re.search(r"(src|href)=\"?(https?:)?//", html), "the report must not load external resources"
    data_uris = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(data_uris) == 3
    for b64 in data_uris:
        _assert_png(base64.b64decode(b64))
    assert "&lt;int4&gt;" in html and "<int4>" not in html  # escaped
    assert "fastest &lt;fit&gt;" in html  # plan reasons


def _chromium(args, tmp_path):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_html_renders_in_headless_chromium(report_dir, tmp_path):
    out, paths = report_dir
    url = f"file://{paths['html']}"
    shot = tmp_path / "shot.png"
    proc = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", url], tmp_path)
    assert shot.exists(), proc.stderr[-2000:]
    img = _assert_png(shot.read_bytes())
    assert img.size == (1280, 2000)
    top = img.crop((0, 0, 1280, 400)).getcolors(maxcolors=1 << 16)
    assert top is None or len(top) > 20, "the top of the page rendered blank"
    dom = _chromium(["--dump-dom", url], tmp_path)
    for table_id in ("summary", "predicted", "details", "device-context", "host-context", "arguments"):
        assert f'<table id="{table_id}">' in dom.stdout
    assert dom.stdout.count("data:image/png;base64,") == 3
    console = [line for line in (proc.stderr + dom.stderr).splitlines() if ":CONSOLE" in line]
    assert not [c for c in console if "Uncaught" in c or "rror" in c], console


def test_report_cli_regenerates_html_and_csv(run, tmp_path, capsys):
    store = ResultsStore(tmp_path / "r.db")
    run_id = store.save_run(Run.from_dict(run.to_dict()))
    db = ["--db", str(store.path)]
    assert main(["report", run_id[:8], "-o", str(tmp_path / "r.html"), *db]) == 0
    html = (tmp_path / "r.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and run_id in html
    assert main(["report", "latest", "-o", str(tmp_path / "r.csv"), *db]) == 0
    assert (tmp_path / "r.csv").read_text().startswith("run_id,model")
    assert render_html(store.get_run(run_id)).count("<tr") >= 5
