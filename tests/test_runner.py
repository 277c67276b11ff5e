"""The on-device runner, run locally as a subprocess with each real runtime."""
from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from edge.benchmark import RUNNER_PATH

CONTEXT_KEYS = {"hostname", "kernel", "machine", "python", "cpu_count", "cpu_governor",
                "cpu_freq_khz", "temp_c_before", "temp_c_after"}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUNNER_PATH), *args], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("backend, runtime", [("torchscript", "torch-lite-interpreter"),
                                              ("executorch", "executorch"),
                                              ("tflite", "ai-edge-litert")])
def test_runner_times_each_runtime(tiny_artifacts, backend, runtime):
    art = tiny_artifacts[backend]
    proc = _run("--artifact", str(art), "--backend", backend, "--inputs",
                str(art.parent / "sample_inputs.npz"), "--warmup", "2", "--iterations", "7",
                "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1  # exactly one JSON line, runtime chatter goes to stderr
    out = json.loads(lines[0])
    assert (out["schema_version"], out["runtime"], out["backend"]) == (1, runtime, backend)
    assert out["runtime_version"] and out["threads"] == 1
    assert (out["warmup"], out["iterations"], len(out["latencies_ms"])) == (2, 7, 7)
    assert all(x > 0 for x in out["latencies_ms"])
    assert out["load_ms"] > 0 and out["first_inference_ms"] > 0 and out["peak_rss_mb"] > 10
    assert set(out["context"]) == CONTEXT_KEYS and out["context"]["cpu_count"] >= 1


def test_runner_takes_shapes_from_manifest_without_inputs(tiny_artifacts):
    proc = _run("--artifact", str(tiny_artifacts["tflite"]), "--iterations", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["backend"] == "tflite" and len(out["latencies_ms"]) == 3


def test_runner_failure_is_one_json_error_line(tmp_path):
    proc = _run("--artifact", str(tmp_path / "missing.pte"))
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert "artifact not found" in out["error"] and out["backend"] == "executorch"
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"not a flatbuffer")
    proc = _run("--artifact", str(bad), "--inputs", str(tmp_path / "none.npz"))
    assert proc.returncode == 1 and json.loads(proc.stdout)["error"]


def test_runner_is_python39_syntax():
    ast.parse(RUNNER_PATH.read_text(), feature_version=(3, 9))
    ast.parse(RUNNER_PATH.with_name("runner_generate.py").read_text(), feature_version=(3, 9))
