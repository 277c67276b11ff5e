"""AdbTransport without a device (argv construction, the real adb client and the session's
private adb server, a hung adb) and the parsers of the runtimes' own benchmark tools, on
recorded real output (tests/fixtures). Against real adbd devices: test_adb_lab.py."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge.bench_native import native_bench_argv, parse_benchmark_model, parse_executor_runner
from edge.errors import CommandTimeoutError, ConnectError, RunnerError, TransportError
from edge.targets import parse_target
from edge.transports import adb as adb_module
from edge.transports.adb import AdbTransport

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _adb(**fields) -> AdbTransport:
    raw = {"transport": "adb", "profile": "pixel", **fields}
    return AdbTransport(parse_target("phone", raw, "test.yaml"))


def test_argv_for_usb_and_network_devices():
    usb = _adb(serial="R58M123ABC")
    assert usb.adb_argv("push", "a", "/data/local/tmp/a") == [
        "adb", "-s", "R58M123ABC", "push", "a", "/data/local/tmp/a"]
    assert not usb.is_network
    net = _adb(host="192.168.1.7")
    assert net.serial == "192.168.1.7:5555" and net.is_network
    shell = usb.shell_argv(["ls", "my dir"], timeout_s=10)
    assert shell[:4] == ["adb", "-s", "R58M123ABC", "shell"] and len(shell) == 5
    assert shell[4].endswith("12 ls 'my dir'")  # one quoted command line; 10 s + 2 s grace


def test_missing_device_is_a_connect_error(adb_server):
    tr = _adb(serial="edge-test-no-such-device")
    with pytest.raises(ConnectError, match="edge-test-no-such-device.*missing"):
        tr.open()


def test_push_and_pull_to_a_missing_device_are_connect_errors(adb_server, tmp_path):
    # The real adb client and no such device: the transfer itself fails (open() would stop
    # earlier, at `adb get-state`), so call the hooks put()/get() use.
    tr = _adb(serial="edge-test-no-such-device")
    local = tmp_path / "model.tflite"
    local.write_bytes(b"\0" * 16)
    with pytest.raises(ConnectError) as push:
        tr._upload(local, "/data/local/tmp/edge/model.tflite", timeout_s=30)
    with pytest.raises(ConnectError) as pull:
        tr._download("/data/local/tmp/edge/out.json", tmp_path / "out.json", timeout_s=30)
    for err, what in ((push, "pushing model.tflite"), (pull, "pulling /data/local/tmp/edge/out.json")):
        assert isinstance(err.value, TransportError)  # what ssh.py raises for a lost device
        msg = str(err.value)
        assert f"lost it while {what}" in msg and "'phone'" in msg
        assert "edge-test-no-such-device" in msg and "missing" in msg
        assert "not found" in msg  # adb's own reason


def test_a_hung_adb_is_killed_at_its_timeout(tmp_path, monkeypatch):
    fake = tmp_path / "adb"  # an adb whose server never answers, with a child holding its output
    fake.write_text("#!/bin/sh\nsleep 600 &\nexec sleep 600\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    tr = _adb(serial="R58M123ABC")
    with pytest.raises(CommandTimeoutError, match=r"`ls /` still running after 0.5 s"):
        tr._exec(["ls", "/"], timeout_s=0.5)
    monkeypatch.setattr(adb_module, "ADB_TIMEOUT_S", 0.5)
    with pytest.raises(ConnectError, match="no answer from the adb server.*adb kill-server"):
        tr.open()


def test_parse_benchmark_model_riscv():
    r = parse_benchmark_model((FIXTURES / "tflite_benchmark_model_riscv.txt").read_text())
    assert r["summary_ms"]["count"] == 50  # the run line, not the op-profiling "Timings" line
    assert r["summary_ms"]["mean"] == pytest.approx(2950.34)
    assert r["summary_ms"]["min"] == pytest.approx(2727.568)
    assert r["summary_ms"]["std"] == pytest.approx(109.798)
    assert r["load_ms"] == pytest.approx(17.187)
    assert r["first_inference_ms"] == pytest.approx(3512.391)
    assert r["peak_rss_mb"] is None and r["memory_delta_mb"]["overall"] == pytest.approx(46.0859)
    assert r["latencies_ms"] == [] and r["schema_version"] == 1


def test_parse_benchmark_model_peak_memory_and_percentiles():
    mi11 = parse_benchmark_model((FIXTURES / "tflite_benchmark_model_mi11.txt").read_text())
    assert mi11["peak_rss_mb"] == pytest.approx(138.809)
    assert mi11["summary_ms"]["mean"] == pytest.approx(249.684)
    logcat = parse_benchmark_model((FIXTURES / "tflite_benchmark_model_logcat.txt").read_text())
    assert logcat["summary_ms"]["p50"] == pytest.approx(141.253)
    assert logcat["summary_ms"]["p95"] == pytest.approx(187.533)
    assert logcat["load_ms"] == pytest.approx(92.318)


def test_parse_executor_runner_per_iteration_and_total_only():
    new = parse_executor_runner((FIXTURES / "executorch_executor_runner.txt").read_text())
    assert new["latencies_ms"] == [pytest.approx(241.944288)]
    assert new["load_ms"] == pytest.approx(4463.268273)
    old = parse_executor_runner((FIXTURES / "executorch_executor_runner_old.txt").read_text())
    assert old["latencies_ms"] == [] and old["summary_ms"]["mean"] == pytest.approx(0.691078)
    lines = "".join(f"I 00:00:01 executorch:executor_runner.cpp:705] Iteration {i} of 4: {ms} ms\n"
                    for i, ms in enumerate([9.0, 5.0, 4.0, 4.5], 1))
    lines += "I 00:00:01 executorch:executor_runner.cpp:714] Model executed successfully 4 time(s) in 22.5 ms.\n"
    warm = parse_executor_runner(lines, warmup=2)
    assert warm["latencies_ms"] == [4.0, 4.5] and warm["first_inference_ms"] == 9.0


def test_parsers_reject_output_without_results():
    with pytest.raises(RunnerError, match="Inference timings"):
        parse_benchmark_model("ERROR: Could not open 'model.tflite'.\n")
    with pytest.raises(RunnerError, match="executed successfully"):
        parse_executor_runner("E executorch:executor_runner.cpp:90] Failed to parse model file\n")


def test_native_argv():
    assert native_bench_argv("tflite", "/d/benchmark_model", "/d/m.tflite", 5, 50, 4) == [
        "/d/benchmark_model", "--graph=/d/m.tflite", "--num_runs=50", "--warmup_runs=5",
        "--min_secs=0", "--warmup_min_secs=0", "--num_threads=4"]
    assert native_bench_argv("executorch", "/d/executor_runner", "/d/m.pte", 5, 50, None) == [
        "/d/executor_runner", "--model_path=/d/m.pte", "--num_executions=55"]
    with pytest.raises(RunnerError):
        native_bench_argv("torchscript", "x", "y", 1, 1, None)
