"""`edge compare` end to end with the real toolchains on the `local` target, and the Python API."""
import csv
import json
import subprocess
import sys
import textwrap

import pytest

import edge
from edge.cli import main
from edge.comparison import STATE_NAME, compare
from edge.results import ResultsStore

BACKENDS = ["torchscript", "executorch", "tflite"]
FAST = ["--warmup", "1", "--iterations", "8"]

BUCKETED = textwrap.dedent('''
    import torch
    from torch import nn


    class Bucketed(nn.Module):
        """An MLP whose output also feeds torch.searchsorted, which ONNX (hence TFLite) cannot express
        and ExecuTorch has no core lowering for; TorchScript runs it."""

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc1, self.fc2 = nn.Linear(64, 128), nn.Linear(128, 10)
            self.register_buffer("edges", torch.linspace(-1.0, 1.0, 8))

        def forward(self, x):
            y = self.fc2(torch.relu(self.fc1(x)))
            return y + 0.0 * torch.searchsorted(self.edges, y.contiguous()).to(y.dtype)


    def factory():
        return Bucketed().eval(), (torch.randn(1, 64),)
''')


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private artifact cache and results store for this module."""
    root = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGE_CACHE_DIR", str(root / "cache"))
        mp.setenv("EDGE_RESULTS_DB", str(root / "results.db"))
        yield root


class Interrupt(BaseException):
    """Stands in for Ctrl-C in the middle of a compare."""


@pytest.fixture(scope="module")
def interrupted(env):
    """A compare stopped by Ctrl-C just before the tflite export; returns its output folder."""
    out = env / "mlp"

    def stop_at_tflite(event):
        if event.backend == "tflite" and event.step == "export" and event.status == "start":
            raise Interrupt()

    with pytest.raises(Interrupt):
        compare("tiny-mlp", "raspberry-pi-4-4gb", "local", backends="all", out_dir=out, warmup=1,
                iterations=8, progress=stop_at_tflite)
    return out


@pytest.fixture(scope="module")
def resumed(interrupted):
    return compare("tiny-mlp", "raspberry-pi-4-4gb", "local", backends="all", out_dir=interrupted, warmup=1,
                   iterations=8)


@pytest.fixture(scope="module")
def warm_cli(resumed, env):
    """The same command a third time through the CLI with --json."""
    proc = _cli_json(["compare", "tiny-mlp", "--profile", "raspberry-pi-4-4gb", "--target", "local",
                      "--backends", "all", "-o", str(resumed.out_dir), *FAST])
    return proc


def _cli_json(argv):
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main([*argv, "--json"])
    return code, json.loads(buf.getvalue())


def test_interrupted_run_saved_its_steps_and_no_run(interrupted, env):
    state = json.loads((interrupted / STATE_NAME).read_text())
    assert len(state["exports"]) == 2 and len(state["benches"]) == 2  # torchscript, executorch
    assert ResultsStore().list_runs() == []  # nothing half-stored


def test_resume_skips_finished_steps(resumed):
    executed = {(s.backend, s.step) for s in resumed.executed_steps()}
    cached = {(s.backend, s.step) for s in resumed.cached_steps()}
    assert executed == {("tflite", "export"), ("tflite", "bench")}
    assert {("torchscript", "export"), ("torchscript", "bench"), ("executorch", "export"),
            ("executorch", "bench"), ("tflite", "plan")} <= cached
    assert resumed.exit_code == 0 and resumed.run.status == "ok"


def test_rows_are_measured(resumed):
    rows = {r.backend: r for r in resumed.run.rows}
    assert sorted(rows) == sorted(BACKENDS)
    for row in rows.values():
        assert row.error is None
        assert row.size_bytes > 1000 and row.artifact_sha256
        assert len(row.latencies_ms) == 8 and 0 < row.latency_ms["p50"] < 1000
        assert row.latency_ms["min"] <= row.latency_ms["p50"] <= row.latency_ms["max"]
        assert row.accuracy == pytest.approx(1.0, abs=0.05) and row.metric == "top1"
        assert row.peak_rss_mb and row.peak_rss_mb > 1
        assert row.context.get("hostname")


def test_warm_cli_run_does_nothing_again(warm_cli):
    code, data = warm_cli
    assert code == 0
    assert data["steps"] and all(s["cached"] for s in data["steps"])
    assert {s["step"] for s in data["steps"]} == {"plan", "export", "bench"}


def test_cli_json_schema(warm_cli):
    _, data = warm_cli
    assert set(data) >= {"run_id", "rows", "report_html", "csv", "status", "exit_code"}
    assert [r["backend"] for r in data["rows"]] == BACKENDS
    for row in data["rows"]:
        assert set(row) >= {"backend", "plan", "size_bytes", "latency_ms", "accuracy", "peak_rss_mb", "predicted"}
        assert set(row["latency_ms"]) == {"p50", "p90", "p99", "mean", "std"}
        assert "error" not in row


def test_cli_outputs_csv_report_and_db(warm_cli, resumed):
    _, data = warm_cli
    records = list(csv.DictReader(open(data["csv"])))
    assert [r["backend"] for r in records] == BACKENDS and all(float(r["latency_p50_ms"]) > 0 for r in records)
    html = open(data["report_html"]).read()
    assert data["run_id"] in html and html.count("data:image/png;base64,") >= 2
    runs = ResultsStore().list_runs()
    assert [r["run_id"] for r in runs] == [data["run_id"], resumed.run_id]
    stored = ResultsStore().get_run(data["run_id"])
    assert stored.rows[0].latencies_ms == resumed.run.rows[0].latencies_ms  # the same cached bench


def test_results_compare_of_the_two_runs(warm_cli, resumed, capsys):
    _, data = warm_cli
    assert main(["results", "compare", resumed.run_id, data["run_id"]]) == 0
    out = capsys.readouterr().out
    assert "torchscript" in out and "+0.0000 (+0.0%)" in out


def test_failing_backends_become_error_rows(env, tmp_path):
    model = tmp_path / "bucketed.py"
    model.write_text(BUCKETED)
    argv = ["compare", f"{model}:factory", "--profile", "raspberry-pi-4-4gb", "-o", str(tmp_path / "out"), *FAST]
    code, data = _cli_json(argv)
    assert code == 10 and data["status"] == "partial" and data["exit_code"] == 10
    rows = {r["backend"]: r for r in data["rows"]}
    assert "error" not in rows["torchscript"] and rows["torchscript"]["latency_ms"]["p50"] > 0
    assert "searchsorted" in rows["executorch"]["error"] and rows["executorch"]["error_type"].endswith("Error")
    assert "onnx" in rows["tflite"]["error"].lower()
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="errors"' in html and "searchsorted" in html
    # when every backend fails, the exit code is the failure's own (4: export failed)
    code, data = _cli_json([*argv, "--backends", "executorch"])
    assert code == 4 and data["status"] == "failed" and data["rows"][0]["error"]


def test_unknown_backend_is_a_config_error(env, tmp_path, capsys):
    assert main(["compare", "tiny-mlp", "--backends", "torchscript,onnx", "-o", str(tmp_path)]) == 2
    assert "expected backends from" in capsys.readouterr().err


def test_python_api_is_lazy_and_callable():
    code = ("import sys, edge; assert 'torch' not in sys.modules, 'import edge pulled in torch'; "
            "assert callable(edge.compare) and callable(edge.bench) and callable(edge.plan); "
            "from edge.comparison import CompareResult; import edge.benchmark; "
            "assert callable(edge.compare) and callable(edge.bench)")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert edge.compare.compare is compare
    plan = edge.plan("tiny-mlp", "raspberry-pi-4-4gb", backends="executorch,tflite", max_size_mb=1)
    assert plan.backend in ("executorch", "tflite") and plan.predicted["size_bytes"] <= 1e6


def test_compare_on_an_ssh_device(env, devicelab, tmp_path):
    """The target's own profile is used when --profile is not given; the device runs the runner over ssh."""
    code, data = _cli_json(["compare", "tiny-mlp", "--target", devicelab.names[0], "--targets-file",
                            devicelab.targets_file, "--backends", "tflite", "-o", str(tmp_path / "ssh"), *FAST])
    assert code == 0, data
    run = ResultsStore().get_run(data["run_id"])
    assert run.target == devicelab.names[0] and run.profile == devicelab.state["devices"][0]["profile"]
    (row,) = run.rows
    assert row.backend == "tflite" and len(row.latencies_ms) == 8 and row.context["hostname"]
    assert [s["step"] for s in data["steps"] if not s["cached"]] == ["plan", "export", "bench"]
