"""deploy/bench: result parsing, and end to end through the CLI on a lab device."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.artifact import load_artifact
from edge.benchmark import (BenchResult, bench, deploy, latency_stats, make_result,
                        parse_runner_output)
from edge.cli import main
from edge.errors import RunnerError
from edge.targets import load_targets
from edge.transports import connect


def test_latency_stats_match_numpy():
    xs = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0, 7.0]
    s = latency_stats(xs)
    for key, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        assert s[key] == pytest.approx(np.percentile(xs, q))
    assert s["mean"] == pytest.approx(np.mean(xs)) and s["std"] == pytest.approx(np.std(xs, ddof=1))
    assert (s["min"], s["max"]) == (1.0, 10.0)
    with pytest.raises(RunnerError):
        latency_stats([])


def test_parse_runner_output_finds_the_json_line_and_reports_errors():
    good = {"schema_version": 1, "latencies_ms": [1.0]}
    assert parse_runner_output("noise\n" + json.dumps(good) + "\n") == good
    with pytest.raises(RunnerError, match="failed on the device: ImportError: no executorch"):
        parse_runner_output(json.dumps({"schema_version": 1, "error": "ImportError: no executorch"}))
    with pytest.raises(RunnerError, match="no JSON result.*Traceback"):
        parse_runner_output("", "Traceback ...", 1)
    with pytest.raises(RunnerError, match="schema_version 1"):
        parse_runner_output(json.dumps({"schema_version": 9}))


def test_summary_only_results_keep_mean_and_leave_unknown_percentiles(tiny_artifacts):
    art = load_artifact(tiny_artifacts["tflite"])
    raw = {"runtime": "tflite-benchmark_model", "summary_ms": {"mean": 2.5, "min": 2.0, "max": 3.0,
                                                                "std": 0.1, "count": 50}}
    res = make_result(raw, art, "phone")
    assert isinstance(res, BenchResult) and res.latencies_ms == []
    assert res.latency_ms["mean"] == 2.5 and res.latency_ms["p90"] is None
    assert res.to_dict()["artifact_sha256"] == art.sha256


def test_deploy_skips_unchanged_files(devicelab, tiny_artifacts):
    target = devicelab.names[0]
    first = deploy(tiny_artifacts["torchscript"], target, devicelab.targets_file)
    assert set(first["files"]) == {"artifact", "manifest", "runner", "inputs"}
    again = deploy(tiny_artifacts["torchscript"], target, devicelab.targets_file)
    assert again["bytes_sent"] == 0 and all(f["skipped"] for f in again["files"].values())
    assert again["remote_dir"] == first["remote_dir"]


@pytest.mark.parametrize("backend", ["torchscript", "executorch", "tflite"])
def test_cli_bench_end_to_end_on_lab_device(devicelab, tiny_artifacts, capsys, backend):
    art = tiny_artifacts[backend]
    code = main(["bench", str(art), "--target", devicelab.names[0], "--targets-file",
                 devicelab.targets_file, "--warmup", "1", "--iterations", "6", "--threads", "1",
                 "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (out["backend"], out["target"], out["threads"]) == (backend, devicelab.names[0], 1)
    assert out["artifact_sha256"] == load_artifact(art).sha256 and len(out["latencies_ms"]) == 6
    assert set(out["latency_ms"]) == {"p50", "p90", "p99", "mean", "std", "min", "max"}
    assert out["latency_ms"]["min"] <= out["latency_ms"]["p50"] <= out["latency_ms"]["max"]
    assert out["load_ms"] > 0 and out["peak_rss_mb"] > 0 and out["context"]["hostname"]


def test_cli_bench_text_and_runner_failure(devicelab, tiny_artifacts, tmp_path, capsys):
    code = main(["bench", str(tiny_artifacts["tflite"]), "--target", devicelab.names[0],
                 "--targets-file", devicelab.targets_file, "--iterations", "3"])
    text = capsys.readouterr().out
    assert code == 0 and "p50" in text and "p99" in text and "std" in text
    broken = tmp_path / "broken"
    shutil.copytree(tiny_artifacts["tflite"].parent, broken)
    (broken / "model.tflite").write_bytes(b"\0" * 64)
    # a consistent manifest (edge refuses a file that changed after export before pushing it)
    from edge.artifact import sha256_file

    manifest = json.loads((broken / "manifest.json").read_text())
    manifest.update(sha256=sha256_file(broken / "model.tflite"), size_bytes=64)
    (broken / "manifest.json").write_text(json.dumps(manifest))
    code = main(["bench", str(broken / "model.tflite"), "--target", devicelab.names[0],
                 "--targets-file", devicelab.targets_file, "--iterations", "3"])
    assert code == RunnerError.exit_code
    assert "runner failed on the device" in capsys.readouterr().err


def test_cli_targets_list_and_check(devicelab, capsys):
    assert main(["targets", "list", "--targets-file", devicelab.targets_file, "--json"]) == 0
    names = {t["name"] for t in json.loads(capsys.readouterr().out)}
    assert names == {"local", *devicelab.names}
    assert main(["targets", "check", devicelab.names[0], "--targets-file",
                 devicelab.targets_file, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    dev = info["device"]
    assert dev["arch"] == os.uname().machine and dev["cores"] == os.cpu_count()
    assert {"torch", "executorch", "ai_edge_litert"} <= set(dev["runtimes"])
    assert dev["ram_mb"] > 0 and dev["free_disk_mb"] > 0
    if os.geteuid() == 0:  # the lab caps each device at its profile's model budget
        assert dev["memory_limit_mb"] == 2048
    # the lab device is this x86 machine posing as a Raspberry Pi 4: the check says so
    assert info["profile_matches"] is False and any("arch" in m for m in info["mismatches"])


def test_bench_on_the_local_target(tiny_artifacts):
    res = bench(tiny_artifacts["tflite"], "local", warmup=1, iterations=4)
    assert res.target == "local" and len(res.latencies_ms) == 4 and res.runtime == "ai-edge-litert"


def test_a_target_naming_a_tflite_distribution_is_measured_with_it(tiny_artifacts):
    from dataclasses import replace

    from edge.targets import local_target

    for dist, runtime in (("tensorflow", "tensorflow-lite"), ("ai-edge-litert", "ai-edge-litert")):
        res = bench(tiny_artifacts["tflite"], replace(local_target(), runtime_dists={"tflite": dist}), warmup=0,
                    iterations=2)
        assert res.runtime == runtime and len(res.latencies_ms) == 2


def test_the_runner_knows_every_runtime_distribution_a_backend_names():
    from edge.backends import BACKENDS, get_backend
    from edge.runner.runner import RUNTIME_DISTS

    for name in BACKENDS:  # the runner is standalone on the device: its list mirrors the backends'
        dists = get_backend(name).runtime_dists
        assert [d for d, _ in RUNTIME_DISTS.get(name, ((dists[0], None),))] == dists, name


def test_a_linux_target_naming_benchmark_model_is_measured_through_it(devicelab, tiny_artifacts, tmp_path):
    """An SSH device that names the runtime's own benchmark tool is measured with it, as adb devices
    are (no runner, no torch on the device). The tool is tests/fixtures/benchmark_model_standin.py:
    the real LiteRT interpreter behind benchmark_model's flags and output, since the binary itself
    cannot be built here."""
    import sys

    import yaml

    tool = tmp_path / "benchmark_model"
    source = Path(__file__).parent / "fixtures" / "benchmark_model_standin.py"
    tool.write_text(f"#!{sys.executable}\n" + source.read_text())
    name = devicelab.names[0]
    raw = yaml.safe_load(Path(devicelab.targets_file).read_text())
    entries = raw["targets"] if "targets" in raw else raw
    entries[name]["benchmark_model"] = str(tool)
    targets_file = tmp_path / "targets.yaml"
    targets_file.write_text(yaml.safe_dump(raw))
    res = bench(tiny_artifacts["tflite"], name, targets_file=str(targets_file), warmup=2, iterations=7)
    assert res.runtime == "tflite-benchmark_model" and res.target == name
    assert res.latencies_ms == [] and res.latency_ms["mean"] > 0  # the tool prints a summary only
    assert res.iterations == 7 and res.load_ms > 0 and res.peak_rss_mb > 0
    # the tool went into the device's workdir and ran there, over SSH
    with connect(load_targets(targets_file)[name]) as tr:
        listed = tr.run(["ls", f"{tr.target.workdir.rstrip('/')}/bin"], timeout_s=30).stdout
    assert "benchmark_model" in listed.split()
