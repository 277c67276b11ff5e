"""The whole edge flow over adb, on the device lab's adbd device with the Python runner:
`edge targets check`, `edge deploy`, `edge bench` and `edge compare tiny-cnn --backends all`."""
from __future__ import annotations

import json
import os

import pytest

from edge.artifact import load_artifact
from edge.cli import main

FAST = ["--warmup", "1", "--iterations", "6"]


@pytest.fixture(scope="module")
def adb_target(adblab):
    return adblab.names[0], adblab.targets_file


def test_targets_check_over_adb(adb_target, capsys):
    name, targets_file = adb_target
    assert main(["targets", "check", name, "--targets-file", targets_file, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    dev = info["device"]
    assert dev["arch"] == os.uname().machine and dev["cores"] == os.cpu_count()
    assert {"torch", "executorch", "ai_edge_litert"} <= set(dev["runtimes"])
    assert dev["memory_limit_mb"] == 2048 and dev["free_disk_mb"] > 0


def test_deploy_then_bench_over_adb(adb_target, tiny_artifacts, capsys):
    name, targets_file = adb_target
    art = tiny_artifacts["tflite"]
    assert main(["deploy", str(art), "--target", name, "--targets-file", targets_file,
                 "--json"]) == 0
    capsys.readouterr()
    assert main(["deploy", str(art), "--target", name, "--targets-file", targets_file,
                 "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["bytes_sent"] == 0 and all(f["skipped"] for f in again["files"].values())
    assert main(["bench", str(art), "--target", name, "--targets-file", targets_file, *FAST,
                 "--threads", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["backend"], out["target"]) == ("tflite", name) and len(out["latencies_ms"]) == 6
    assert out["artifact_sha256"] == load_artifact(art).sha256
    assert out["peak_rss_mb"] > 0 and out["context"]["hostname"]
    facts = out["context"]["device_facts"]  # read through adb; this Linux device has no getprop
    assert facts["product_model"] is None and isinstance(facts["thermal_c"], dict)


def test_compare_tiny_cnn_all_backends_over_adb(adb_target, artifact_cache, tmp_path, capsys,
                                                monkeypatch):
    name, targets_file = adb_target
    monkeypatch.setenv("EDGE_CACHE_DIR", str(artifact_cache))
    out = tmp_path / "cmp"
    code = main(["--json", "compare", "tiny-cnn", "--target", name, "--targets-file", targets_file,
                 "--backends", "all", "-o", str(out), "--db", str(tmp_path / "r.db"), *FAST])
    assert code == 0, capsys.readouterr().out[-2000:]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {r["backend"] for r in rows} >= {"torchscript", "executorch", "tflite"}
    for row in rows:
        assert not row.get("error"), row
        assert len(row["latencies_ms"]) == 6 and row["context"]["hostname"]
