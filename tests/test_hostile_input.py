"""Bad input gets a clear error, never a traceback or a silently wrong result (issue: hostile input)."""
import csv
import re
import io

import pytest

from edge.cli import main
from edge.errors import ConfigError, ModelLoadError
from edge.models import load_model
from edge.profiles import load_profile
from edge.runs import Run, RunRow
from edge.targets import parse_targets_file





@pytest.mark.parametrize("bad", [".nan", ".inf", "-.inf", "1e32"])
def test_non_finite_and_absurd_profile_numbers_are_refused_naming_the_field(tmp_path, bad):
    shipped = load_profile("raspberry-pi-5-8gb").path.read_text()
    lines = [ln for ln in shipped.splitlines() if ln.strip().startswith("bandwidth_gbs:")]
    assert lines, "the shipped profile states a bandwidth"
    path = tmp_path / "bad.yaml"
    path.write_text(shipped.replace(lines[0], lines[0].split(":")[0] + f": {bad}", 1))
    with pytest.raises(ConfigError, match=r"bandwidth_gbs.*> 0 and <= "):
        load_profile(str(path))


@pytest.mark.parametrize("loader,what", [
    (lambda p: load_profile(str(p)), "device profile"),
    (lambda p: parse_targets_file(p), "targets file"),
])
def test_non_utf8_files_are_config_errors_not_tracebacks(tmp_path, loader, what):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"expected a UTF-8 {what}, found bytes that are not UTF-8 at byte 9"):
        loader(path)


def test_plan_file_with_non_utf8_bytes(tmp_path, capsys):
    path = tmp_path / "plan.yaml"
    path.write_bytes(b"model: \xff\xfe\n")
    code = main(["export", "tiny-mlp", "--backend", "torchscript", "--plan", str(path), "-o", str(tmp_path / "o")])
    assert code == ConfigError.exit_code
    err = capsys.readouterr().err
    assert "not UTF-8" in err and "Traceback" not in err


def test_duplicate_target_names_are_refused(tmp_path):
    path = tmp_path / "targets.yaml"
    path.write_text("targets:\n  pi:\n    transport: ssh\n    host: a\n    profile: raspberry-pi-5-8gb\n"
                    "  pi:\n    transport: ssh\n    host: b\n    profile: raspberry-pi-5-8gb\n")
    with pytest.raises(ConfigError, match="duplicate key 'pi'"):
        parse_targets_file(path)


@pytest.mark.parametrize("timeout", ["nan", "inf", "0"])
def test_bench_timeout_must_be_finite_and_positive(tiny_artifacts, capsys, timeout):
    code = main(["bench", str(tiny_artifacts["torchscript"]), "--target", "local", "--timeout", timeout])
    assert code == ConfigError.exit_code
    err = capsys.readouterr().err
    assert "expected a timeout in seconds > 0 and finite" in err and "Traceback" not in err


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted_as_text():
    from edge.report import to_csv

    row = RunRow(backend="tflite", plan_name="=HYPERLINK(\"http://x\")", error="-1+cmd|' /C calc'!A0",
                 context={"hostname": "@evil"})
    run = Run(model="+model", profile="p", target="t", args={}, status="failed", context={}, rows=[row],
              extra={}, run_id="20260101-000000-abcd", created_at="2026-01-01T00:00:00+00:00")
    rec = next(csv.DictReader(io.StringIO(to_csv(run))))
    assert rec["plan"] == "'=HYPERLINK(\"http://x\")" and rec["model"] == "'+model"
    assert rec["error"].startswith("'-1+cmd")


@pytest.mark.parametrize("body,fragment", [
    ("import sys\nsys.exit(0)\n", "called sys.exit(0)"),
    ("import sys\ndef factory():\n    sys.exit(3)\n", "the factory called sys.exit(3)"),
])
def test_a_user_factory_calling_sys_exit_is_a_load_error(tmp_path, body, fragment, capsys):
    path = tmp_path / "exits.py"
    path.write_text(body)
    with pytest.raises(ModelLoadError, match=re.escape(fragment)):
        load_model(f"{path}:factory")
    code = main(["models", "show", f"{path}:factory"])
    assert code == ModelLoadError.exit_code and fragment in capsys.readouterr().err


def test_text_from_devices_and_users_is_text_in_plots_and_html():
    """matplotlib would parse "$...$" as math and raise on "$\\x$"; the HTML escapes it."""
    from edge.report import render_html, render_plots

    rows = [RunRow(backend="tflite", plan_name="$\\alpha^{$", size_bytes=1000, accuracy=1.0, metric="top1",
                   latency_ms={"p50": 1.0, "p90": 1.1, "p99": 1.2, "mean": 1.0, "std": 0.1, "min": 0.9, "max": 1.3},
                   latencies_ms=[0.9, 1.0, 1.1], predicted={"latency_ms": 1.0},
                   context={"hostname": "$\\x$ <script>"})]
    run = Run(model="$m$", profile="p", target="$t", args={}, status="ok", context={}, rows=rows, extra={},
              run_id="20260101-000000-abcd", created_at="2026-01-01T00:00:00+00:00")
    images = render_plots(run)
    assert {"latency", "tradeoff", "predicted"} <= set(images) and all(png.startswith(b"\x89PNG") for png in
                                                                      images.values())
    html = render_html(run, images)
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_a_report_that_cannot_be_written_does_not_lose_the_run(tmp_path, monkeypatch):
    from edge.comparison import compare
    from edge.errors import ResultsError
    from edge.results import ResultsStore

    monkeypatch.setenv("EDGE_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "out"
    (out / "report.html").mkdir(parents=True)  # the report's path is taken by a folder
    db = tmp_path / "results.db"
    with pytest.raises(ResultsError, match=r"the run itself is stored as .* `edge report"):
        compare("tiny-mlp", "raspberry-pi-4-4gb", "local", backends="torchscript", out_dir=out, db=db,
                warmup=1, iterations=4)
    (stored,) = ResultsStore(db).list_runs()
    run = ResultsStore(db).get_run(stored["run_id"])
    assert run.rows[0].latencies_ms and len(run.rows[0].latencies_ms) == 4


@pytest.mark.parametrize("raw,fragment", [
    ({"latencies_ms": [1.0, "fast"]}, "finite numbers >= 0, found 'fast'"),
    ({"latencies_ms": [1.0, float("nan")]}, "finite numbers >= 0, found nan"),
    ({"latencies_ms": "1,2"}, "a list of numbers, found str"),
    ({"latencies_ms": [1.0], "context": ["x"]}, "context to be a mapping, found list"),
])
def test_device_output_is_checked_before_it_is_trusted(tiny_artifacts, raw, fragment):
    from edge.artifact import load_artifact
    from edge.benchmark import make_result
    from edge.errors import RunnerError

    with pytest.raises(RunnerError, match=re.escape(fragment)):
        make_result(raw, load_artifact(tiny_artifacts["torchscript"]), "dev")


def test_probe_output_that_is_not_json_means_no_runtimes():
    from edge.devices import _probe_runtimes

    assert _probe_runtimes("Welcome to the device!\nnot json") == {}
    assert _probe_runtimes('["a"]') == {} and _probe_runtimes("") == {}
    assert _probe_runtimes('motd\n{"torch": "2.13.0"}') == {"torch": "2.13.0"}


@pytest.mark.parametrize("field,value,fragment", [
    ("sha256", "../../../../etc", "expected sha256 as 64 lowercase hex digits"),
    ("file", "/etc/hostname", "expected file to be a plain file name"),
    ("file", "../model.ptl", "expected file to be a plain file name"),
])
def test_manifest_fields_used_as_paths_are_validated(tiny_artifacts, tmp_path, field, value, fragment):
    import json
    import shutil

    from edge.artifact import load_artifact

    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts["torchscript"].parent, art)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest[field] = value
    (art / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=fragment):
        load_artifact(art)


def test_an_artifact_changed_after_export_is_refused(tiny_artifacts, tmp_path):
    import shutil

    from edge.artifact import load_artifact

    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts["torchscript"].parent, art)
    with open(art / "model.ptl", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(ConfigError, match="the file changed after export"):
        load_artifact(art)


@pytest.mark.parametrize("name", ["../escaped", "/abs/olddir", "org/model"])
def test_model_names_never_leave_the_output_folder(tmp_path, name, artifact_cache):
    from edge.exporter import export

    spec = load_model("tiny-mlp")
    spec = type(spec)(**{**spec.__dict__, "name": name})
    out = tmp_path / "out"
    art = export(spec, "torchscript", out, cache_dir=artifact_cache)
    assert art.dir.parent == out and not art.dir.name.startswith(".")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
