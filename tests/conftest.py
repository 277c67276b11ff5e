"""Shared fixtures: the device lab (real sshd "devices") and tiny artifacts per runtime.

``devicelab`` (session): starts ``scripts/devicelab`` with one device and stops it at the
end. It yields a :class:`Lab` with ``targets_file`` (pass it as ``targets_file=`` or
``--targets-file``) and ``names`` (the target names, e.g. ``["lab0"]``).

``adb_server`` (session): a private adb server for the whole session on a free port, named
by ``ANDROID_ADB_SERVER_PORT`` (so the suite never touches the user's server on 5037); killed
at the end, by pid when ``adb kill-server`` does not answer. ``adblab`` (session, root only):
two adbd devices (``adb0``, ``adb1``), each in its own network namespace, connected to that
server; a :class:`Lab` like ``devicelab``'s, stopped (adb disconnect, adbd, netns) at the end.

``tiny_artifacts`` (session): {backend: path of model.<suffix>} for torchscript,
executorch and tflite: a 8 -> 16 -> 4 MLP, each with manifest.json and sample_inputs.npz,
built once and cached in pytest's cache directory.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from labtools import load_devicelab

# One intra-op thread for the whole session: on a small shared machine two threads
# oversubscribe the cores (model loads and sensitivity runs were 4-5x slower).
torch.set_num_threads(1)
os.environ["EDGE_HOST_THREADS"] = "1"  # what edge.host.configure_torch sets when a model loads


@dataclass
class Lab:
    dir: Path
    targets_file: str
    names: list[str]
    state: dict = field(default_factory=dict)


@pytest.fixture(scope="session")
def devicelab(tmp_path_factory) -> Lab:
    """One running sshd device (own netns where root allows); stopped after the session."""
    lab = load_devicelab()
    lab_dir = tmp_path_factory.mktemp("devicelab")
    state = lab.start(devices=1, lab_dir=lab_dir)
    try:
        yield Lab(dir=lab_dir, targets_file=state["targets_file"],
                  names=[d["name"] for d in state["devices"]], state=state)
    finally:
        lab.stop(lab_dir)


@pytest.fixture(scope="session")
def adb_server() -> int:
    """A private adb server (its port) that every adb call of the session uses."""
    if shutil.which("adb") is None:
        pytest.skip("no adb client (scripts/setup-system installs it)")
    adb = load_devicelab().adblab
    port = adb.free_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANDROID_ADB_SERVER_PORT", str(port))
        try:
            adb.start_server(port)
            yield port
        finally:
            adb.kill_server(port)


@pytest.fixture(scope="session")
def adblab(adb_server, tmp_path_factory) -> Lab:
    """Two running adbd devices in their own network namespaces; stopped after the session."""
    lab = load_devicelab()
    if why := lab.adblab.why_no_adb():
        pytest.skip(f"no adb lab devices: {why}")
    lab_dir = tmp_path_factory.mktemp("adblab")
    try:
        state = lab.start(devices=0, adb_devices=2, lab_dir=lab_dir)
        yield Lab(dir=lab_dir, targets_file=state["targets_file"],
                  names=[d["name"] for d in state["devices"]], state=state)
    finally:
        lab.stop(lab_dir)


# --- tiny artifacts ----------------------------------------------------------------------

INPUT_SHAPE = (1, 8)


def _manifest(backend: str, path: Path, params: int, tool_versions: dict) -> dict:
    from edge.artifact import MANIFEST_SCHEMA_VERSION, sha256_file

    return {
        "schema_version": MANIFEST_SCHEMA_VERSION, "backend": backend, "file": path.name,
        "sha256": sha256_file(path), "size_bytes": path.stat().st_size,
        "model": {"name": "test-mlp", "source": "tests/conftest.py", "params": params,
                  "metric": "cosine"},
        "inputs": [{"name": "x", "shape": list(INPUT_SHAPE), "dtype": "float32", "layout": None,
                    "source_layout": None}],
        "outputs": [{"name": "y", "shape": [1, 4], "dtype": "float32", "layout": None}],
        "compression": None, "delegation": {}, "tool_versions": tool_versions, "notes": [],
        "validation": None, "cache_key": None, "created_at": None,
    }


def _finish(out: Path, backend: str, model_file: Path, params: int, versions: dict) -> Path:
    x = np.random.default_rng(0).standard_normal(INPUT_SHAPE).astype(np.float32)
    np.savez(out / "sample_inputs.npz", x)
    (out / "manifest.json").write_text(json.dumps(_manifest(backend, model_file, params, versions)))
    return model_file


def _torch_mlp():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()


def build_torchscript(out: Path) -> Path:
    import torch

    model = _torch_mlp()
    traced = torch.jit.freeze(torch.jit.trace(model, torch.zeros(INPUT_SHAPE)))
    path = out / "model.ptl"
    traced._save_for_lite_interpreter(str(path))
    return _finish(out, "torchscript", path, 212, {"torch": torch.__version__})


def build_executorch(out: Path) -> Path:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    exported = torch.export.export(_torch_mlp(), (torch.zeros(INPUT_SHAPE),))
    program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
    path = out / "model.pte"
    path.write_bytes(program.buffer)
    return _finish(out, "executorch", path, 212, {"torch": torch.__version__})


def build_tflite(out: Path) -> Path:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    w1, w2 = (tf.constant(rng.standard_normal(s).astype(np.float32)) for s in ((8, 16), (16, 4)))

    @tf.function(input_signature=[tf.TensorSpec(INPUT_SHAPE, tf.float32, name="x")])
    def mlp(x):
        return tf.matmul(tf.nn.relu(tf.matmul(x, w1)), w2)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([mlp.get_concrete_function()], mlp)
    path = out / "model.tflite"
    path.write_bytes(converter.convert())
    return _finish(out, "tflite", path, 192, {"tensorflow": tf.__version__})


BUILDERS = {"torchscript": build_torchscript, "executorch": build_executorch, "tflite": build_tflite}


@pytest.fixture(scope="session")
def tiny_artifacts(request) -> dict[str, Path]:
    """{backend: artifact file}; built on first use, then reused from pytest's cache."""
    root = Path(request.config.cache.mkdir("edge-tiny-artifacts-v1"))
    paths = {}
    for backend, build in BUILDERS.items():
        out = root / backend
        manifest = out / "manifest.json"
        if manifest.exists():
            paths[backend] = out / json.loads(manifest.read_text())["file"]
            if paths[backend].exists():
                continue
        out.mkdir(parents=True, exist_ok=True)
        paths[backend] = build(out)
    return paths


@pytest.fixture(scope="session")
def artifact_cache(tmp_path_factory) -> Path:
    """One export cache for the session: a zoo model is converted once, whichever test asks first."""
    return tmp_path_factory.getbasetemp() / "edge-artifact-cache"


@pytest.fixture(scope="session")
def tiny_mlp():
    from edge.models import load_model

    return load_model("tiny-mlp")


@pytest.fixture(scope="session")
def tiny_cnn():
    from edge.models import load_model

    return load_model("tiny-cnn")


@pytest.fixture(scope="session")
def tiny_lm():
    from edge.models import load_model

    return load_model("tiny-lm")
