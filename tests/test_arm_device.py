"""The emulated aarch64 lab device (scripts/arm-device): Debian arm64 python3.11 under qemu-user.

A bare device, ``edge targets setup`` from the host's wheel cache (offline: filled by
``make setup`` through ``scripts/arm-device install``), ``edge targets check``, then
``edge compare tiny-cnn --backends tflite`` on it, and its outputs against the host's.
Skipped where the device cannot be built (no qemu, no arm64 sysroot, an empty wheel cache).
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os

import numpy as np
import pytest

from edge.cli import main as edge_main
from edge.devices import check_target
from edge.provision import cache_dir, setup_target
from edge.targets import get_target
from edge.transports import connect
from labtools import REPO, load_devicelab

DEVICE_INFO = {"machine": "aarch64", "python": "3.11", "implementation": "cpython", "libc": "glibc 2.36"}
PROFILE = "emulated-aarch64"
# runs on the device: the tflite outputs of the sample inputs, as JSON lists
OUTPUTS_PY = """
import json, sys
sys.path.insert(0, sys.argv[3])
import numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1]); it.allocate_tensors()
with np.load(sys.argv[2]) as data:
    for d, k in zip(it.get_input_details(), sorted(data.files)):
        it.set_tensor(d["index"], data[k].astype(d["dtype"]))
it.invoke()
print(json.dumps([it.get_tensor(d["index"]).tolist() for d in it.get_output_details()]))
"""


def _arm_device():
    path = str(REPO / "scripts" / "arm-device")
    loader = importlib.machinery.SourceFileLoader("arm_device", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location("arm_device", path,
                                                                                    loader=loader))
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def armlab(tmp_path_factory):
    """One lab device whose python is the aarch64 wrapper; stopped afterwards."""
    arm = _arm_device()
    wrapper = arm.wrapper_path()
    if arm.qemu_path() is None or not wrapper.exists():
        pytest.skip("no aarch64 device: run `scripts/arm-device install` (make setup does, as root)")
    if not any(cache_dir(DEVICE_INFO).glob("ai_edge_litert-*.whl")):
        pytest.skip(f"no aarch64 wheels in {cache_dir(DEVICE_INFO)}: run `scripts/arm-device wheels`")
    lab, lab_dir = load_devicelab(), tmp_path_factory.mktemp("armlab")
    state = lab.start(devices=1, lab_dir=lab_dir, python=str(wrapper), profile=PROFILE,
                      netns=os.geteuid() == 0)
    try:
        yield state["targets_file"], state["devices"][0]["name"]
    finally:
        lab.stop(lab_dir)


def test_bare_device_is_aarch64_with_no_runtime(armlab):
    targets_file, name = armlab
    info = check_target(name, targets_file)
    assert info["device"]["arch"] == "aarch64"  # the interpreter's, not the host shell's
    assert info["device"]["runtimes"] == {}
    assert any("tflite" in m for m in info["mismatches"])


def test_setup_is_idempotent_then_compare_matches_the_host(armlab, tmp_path, capsys):
    targets_file, name = armlab
    first = setup_target(name, ["tflite", "executorch"], targets_file, offline=True)
    names = {i["name"] for i in first["installed"]}
    assert {"ai_edge_litert", "numpy"} <= names and first["bytes_installed"] > 0
    assert first["machine"] == "aarch64" and first["venv_mb"] > 10
    assert "executorch" in first["unavailable"]  # torch's aarch64 wheel is a CUDA build
    second = setup_target(name, ["tflite"], targets_file, offline=True)
    assert second["installed"] == [] and second["bytes_pushed"] == 0
    assert {n.split()[0] for n in second["already_present"]} >= {"ai_edge_litert", "numpy"}
    assert "ai_edge_litert" in check_target(name, targets_file)["device"]["runtimes"]

    out = tmp_path / "cmp"
    code = edge_main(["--json", "compare", "tiny-cnn", "--target", name, "--targets-file", targets_file,
                      "--backends", "tflite", "-o", str(out), "--db", str(tmp_path / "r.db"),
                      "--warmup", "1", "--iterations", "3"])
    assert code == 0, capsys.readouterr().out[-2000:]
    results = json.loads((out / "results.json").read_text())
    row = results["rows"][0]
    assert not row.get("error") and row["context"]["machine"] == "aarch64", row
    assert any("runs under an emulator" in n for n in results["extra"]["notes"])  # timings marked
    assert "runs under an emulator" in (out / "report.html").read_text()
    assert row["runtime"] == "ai-edge-litert" and row["latencies_ms"]
    assert 0 < row["baseline_rss_mb"] <= row["peak_rss_mb"]  # the runtime alone, then with the model

    model = next(out.glob("artifacts/*/model.tflite"))
    inputs = model.with_name("sample_inputs.npz")
    tgt = get_target(name, targets_file)
    with connect(tgt) as tr:
        remote_model = f"{tgt.workdir}/check/model.tflite"
        remote_inputs = f"{tgt.workdir}/check/sample_inputs.npz"
        tr.put(model, remote_model)
        tr.put(inputs, remote_inputs)
        site = f"{tgt.workdir}/venv/lib/python3.11/site-packages"
        res = tr.run([tgt.python, "-c", OUTPUTS_PY, remote_model, remote_inputs, site], timeout_s=300)
    device_out = [np.asarray(o) for o in json.loads(res.stdout.strip().splitlines()[-1])]
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model))
    it.allocate_tensors()
    with np.load(inputs) as data:
        for d, k in zip(it.get_input_details(), sorted(data.files)):
            it.set_tensor(d["index"], data[k].astype(d["dtype"]))
    it.invoke()
    host_out = [it.get_tensor(d["index"]) for d in it.get_output_details()]
    for dev, host in zip(device_out, host_out):
        assert dev.shape == host.shape
        assert np.allclose(dev, host, atol=1e-4), float(np.abs(dev - host).max())
