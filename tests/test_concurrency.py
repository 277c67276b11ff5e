"""Concurrency: the device bench lock, concurrent pushes into one workdir, concurrent exports.

Everything runs for real: LocalTransport (this machine as the device), the lab's sshd device,
and separate Python processes for the export cache. Tests wait for states (a log line, a
file, a lock owner), never for a length of time, and stop what they start.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edge import device_lock
from edge.artifact import load_artifact, sha256_file
from edge.benchmark import bench
from edge.device_lock import LOCK_NAME, DeviceLock
from edge.errors import DeviceBusyError
from edge.exporter import _swap_into_place, export
from edge.targets import get_target, local_target
from edge.transports import connect
from edge.transports import local as local_transport

REPO = Path(__file__).resolve().parents[1]
STATE_WAIT_S = 120.0  # a generous bound for a state to appear: reaching it fails the test, never passes it


def _wait_for(predicate, what: str, timeout_s: float = STATE_WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def device(tmp_path):
    """A local target with its own workdir: this machine is the device."""
    return dataclasses.replace(local_target(), workdir=str(tmp_path / "device"))


def _lock_dir(target) -> Path:
    return Path(target.workdir) / LOCK_NAME


def _owner(target) -> dict:
    text = (_lock_dir(target) / "owner").read_text()
    return dict(line.split("=", 1) for line in text.splitlines())


def _plant_lock(target, **fields) -> None:
    """A lock as another bench would have left it (owner fields override the defaults)."""
    owner = {"token": "planted", "host": "elsewhere", "boot": "", "pid": "1",
             "since": str(int(time.time())), "hold_s": "3600", "user": "someone", **fields}
    _lock_dir(target).mkdir(parents=True)
    (_lock_dir(target) / "owner").write_text("".join(f"{k}={v}\n" for k, v in owner.items()))


class _LogEvent(logging.Handler):
    """Sets ``event`` when a record from ``logger`` contains ``text``."""

    def __init__(self, text: str):
        super().__init__(logging.DEBUG)
        self.text, self.event = text, threading.Event()

    def emit(self, record):
        if self.text in record.getMessage():
            self.event.set()


@pytest.fixture
def lock_log():
    handler = _LogEvent("another bench holds")
    logger = logging.getLogger("edge.device_lock")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.event
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


# --- the device lock ------------------------------------------------------------------------

def test_a_bench_refuses_a_device_another_bench_holds(device, tiny_artifacts):
    with connect(device) as tr, DeviceLock(tr, hold_s=600, wait_s=0):
        holder = _owner(device)
        with pytest.raises(DeviceBusyError) as err:
            bench(tiny_artifacts["torchscript"], device, warmup=0, iterations=1, device_wait_s=0)
        assert _owner(device) == holder  # the refused bench left the holder's lock alone
    msg = str(err.value)
    assert f"target '{device.name}' is busy" in msg and str(_lock_dir(device)) in msg
    assert f"pid {os.getpid()}" in msg and f"host {holder['host']}" in msg and "since " in msg
    assert "--device-wait" in msg and "remove" in msg
    assert err.value.exit_code == 7
    assert not _lock_dir(device).exists()  # the holder released it on leaving


def test_a_bench_waits_for_a_busy_device_then_runs(device, tiny_artifacts, lock_log):
    with connect(device) as tr, ThreadPoolExecutor(1) as pool:
        holder = DeviceLock(tr, hold_s=600, wait_s=0)
        holder.acquire()
        try:
            fut = pool.submit(bench, tiny_artifacts["torchscript"], device, warmup=0, iterations=2,
                              device_wait_s=STATE_WAIT_S)
            _wait_for(lambda: lock_log.is_set() or fut.done(), "the second bench to find the device busy")
            assert lock_log.is_set() and not fut.done(), "the bench did not wait for the busy device"
        finally:
            holder.release()
        result = fut.result(timeout=STATE_WAIT_S)
    assert len(result.latencies_ms) == 2 and not _lock_dir(device).exists()


def test_two_benches_at_once_take_turns_and_share_the_workdir(device, tiny_artifacts, monkeypatch):
    """Both push the same files into one workdir at once; their runners never overlap."""
    lock, running, most = threading.Lock(), [0], [0]
    real = local_transport.run_subprocess

    def counting(argv, timeout_s, what):
        is_runner = "--artifact" in argv
        if is_runner:
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
        try:
            return real(argv, timeout_s, what)
        finally:
            if is_runner:
                with lock:
                    running[0] -= 1

    monkeypatch.setattr(local_transport, "run_subprocess", counting)
    start = threading.Barrier(2)

    def one_bench():
        start.wait(timeout=STATE_WAIT_S)
        return bench(tiny_artifacts["torchscript"], device, warmup=1, iterations=3, device_wait_s=STATE_WAIT_S)

    with ThreadPoolExecutor(2) as pool:
        results = [f.result(timeout=2 * STATE_WAIT_S) for f in [pool.submit(one_bench) for _ in range(2)]]
    assert most[0] == 1, "two runners ran on the device at once"
    art = load_artifact(tiny_artifacts["torchscript"])
    assert all(r.artifact_sha256 == art.sha256 and len(r.latencies_ms) == 3 for r in results)
    files = [p for p in Path(device.workdir).rglob("*")]
    assert not [p for p in files if ".tmp-" in p.name] and not _lock_dir(device).exists()
    deployed = next(p for p in files if p.name == art.path.name)
    assert sha256_file(deployed) == art.sha256


@pytest.mark.parametrize("sources", ["same-file", "two-files"])
def test_concurrent_puts_into_one_path_never_mix(device, tmp_path, sources):
    """Two pushes to one path at once both succeed; it then holds one of them whole, never a mix.

    "same-file": two runs pushing the same artifact (the usual case: two compares, one cache).
    """
    a = tmp_path / "a.bin"
    a.write_bytes(b"a" * (4 << 20))
    b = a
    if sources == "two-files":
        b = tmp_path / "b.bin"
        b.write_bytes(b"b" * (4 << 20))
    dest = f"{device.workdir}/artifacts/x/model.bin"
    wholes = {sha256_file(a), sha256_file(b)}
    rounds = 8
    start = threading.Barrier(2)

    def push(src, first):
        try:
            with connect(device) as tr:
                for _ in range(rounds):
                    start.wait(timeout=STATE_WAIT_S)
                    tr.put(src, dest)
                    start.wait(timeout=STATE_WAIT_S)  # both done: check, then start over from no file
                    if first:
                        assert sha256_file(Path(dest)) in wholes
                        Path(dest).unlink()
        except BaseException:
            start.abort()  # the other pusher stops at its next wait instead of waiting out the timeout
            raise

    with ThreadPoolExecutor(2) as pool:
        for f in [pool.submit(push, a, True), pool.submit(push, b, False)]:
            f.result(timeout=STATE_WAIT_S * 2)
    assert os.listdir(Path(dest).parent) == []  # no temporary file left behind


def test_stale_locks_are_broken(device, tmp_path, monkeypatch):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with connect(device) as tr:
        # a holder on this host whose process is gone
        _plant_lock(device, host=device_lock._clean(socket.gethostname()), boot=device_lock._boot_id(),
                    pid=str(gone.pid))
        with DeviceLock(tr, hold_s=60, wait_s=0) as mine:
            assert _owner(device)["token"] == mine.token
        # a holder elsewhere past its own time limit (by the device's clock)
        _plant_lock(device, since=str(int(time.time()) - 7200), hold_s="600")
        with DeviceLock(tr, hold_s=60, wait_s=0) as mine:
            assert _owner(device)["token"] == mine.token
        # a live holder elsewhere within its limit is not stale
        _plant_lock(device)
        with pytest.raises(DeviceBusyError, match="host elsewhere, pid 1, user someone"):
            DeviceLock(tr, hold_s=60, wait_s=0).acquire()
        shutil.rmtree(_lock_dir(device))
        # a lock without an owner record: a bench taking it, or one that died doing so
        _lock_dir(device).mkdir()
        with pytest.raises(DeviceBusyError, match="no owner record"):
            DeviceLock(tr, hold_s=60, wait_s=0).acquire()
        monkeypatch.setattr(device_lock, "ORPHAN_AFTER_S", 0.0)
        with DeviceLock(tr, hold_s=60, wait_s=0) as mine:
            assert _owner(device)["token"] == mine.token
    assert not _lock_dir(device).exists()


def test_release_leaves_a_lock_that_another_bench_took(device):
    with connect(device) as tr:
        mine = DeviceLock(tr, hold_s=60, wait_s=0)
        mine.acquire()
        shutil.rmtree(_lock_dir(device))  # judged stale and broken, then taken by another bench
        _plant_lock(device)
        mine.release()
        assert _owner(device)["token"] == "planted"


def test_the_lock_holds_over_ssh(devicelab, tiny_artifacts):
    target = get_target(devicelab.names[0], devicelab.targets_file)
    lock_path = f"{target.workdir.rstrip('/')}/{LOCK_NAME}"
    with connect(target) as tr:
        with DeviceLock(tr, hold_s=600, wait_s=0):
            with pytest.raises(DeviceBusyError, match=f"busy.*{LOCK_NAME}.*pid {os.getpid()}"):
                bench(tiny_artifacts["tflite"], target, warmup=0, iterations=1, device_wait_s=0)
            assert tr.run(["test", "-d", lock_path], timeout_s=30, check=False).exit_code == 0
        assert tr.run(["test", "-e", lock_path], timeout_s=30, check=False).exit_code != 0
    assert len(bench(tiny_artifacts["tflite"], target, warmup=0, iterations=2, device_wait_s=0).latencies_ms) == 2


# --- the export cache -----------------------------------------------------------------------

EXPORTER_CHILD = r'''
import json, logging, sys, time
from pathlib import Path
from edge.backends.torchscript import TorchScriptBackend
from edge.exporter import export

out, cache, sync, name = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
real = TorchScriptBackend.export

def gated(self, *args, **kwargs):  # say "converting", then wait for the test's go-ahead
    (sync / f"converting-{name}").touch()
    deadline = time.monotonic() + 300
    while not (sync / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return real(self, *args, **kwargs)

TorchScriptBackend.export = gated
art = export("tiny-mlp", "torchscript", out, cache_dir=cache)
print(json.dumps({"cache_hit": art.manifest["cache_hit"], "key": art.manifest["cache_key"]}))
'''


def test_two_processes_exporting_one_key_convert_once(tmp_path):
    out, cache, sync = tmp_path / "out", tmp_path / "cache", tmp_path / "sync"
    sync.mkdir()
    script = tmp_path / "child.py"
    script.write_text(EXPORTER_CHILD)
    procs, logs = {}, {}

    def start(name):
        logs[name] = tmp_path / f"{name}.err"
        with open(logs[name], "w") as err:
            procs[name] = subprocess.Popen([sys.executable, str(script), str(out), str(cache), str(sync), name],
                                           cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                           stdout=subprocess.PIPE, stderr=err, text=True)

    def alive_or_fail(name):
        if procs[name].poll() is not None:
            raise AssertionError(f"exporter {name} exited early: {logs[name].read_text()[-3000:]}")
        return True

    try:
        start("first")
        _wait_for(lambda: alive_or_fail("first") and (sync / "converting-first").exists(),
                  "the first exporter to start converting")
        start("second")
        _wait_for(lambda: alive_or_fail("second") and ((sync / "converting-second").exists()
                                                       or "waiting to reuse" in logs["second"].read_text()),
                  "the second exporter to wait for the first")
        assert not (sync / "converting-second").exists(), "the second exporter converted the same key again"
        (sync / "go").touch()
        results = {}
        for name, proc in procs.items():
            stdout, _ = proc.communicate(timeout=STATE_WAIT_S * 2)
            assert proc.returncode == 0, logs[name].read_text()[-3000:]
            results[name] = json.loads(stdout.strip().splitlines()[-1])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert results["first"]["cache_hit"] is False and results["second"]["cache_hit"] is True
    key = results["first"]["key"]
    assert results["second"]["key"] == key
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == [key]
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == [".locks"]  # no temporary entries
    entry = load_artifact(cache / key)  # verifies the file against the manifest's sha256
    assert entry.manifest["cache_key"] == key and entry.manifest["validation"]["passed"]
    assert sorted(p.name for p in out.iterdir()) == ["tiny-mlp-torchscript"]
    assert sha256_file(load_artifact(out / "tiny-mlp-torchscript").path) == entry.sha256


def test_a_damaged_cache_entry_is_rebuilt(tmp_path):
    first = export("tiny-mlp", "torchscript", tmp_path / "a", cache_dir=tmp_path / "cache")
    model = tmp_path / "cache" / first.manifest["cache_key"] / first.path.name
    model.unlink()  # (not written in place: the published artifact shares the file)
    model.write_bytes(b"damaged")
    again = export("tiny-mlp", "torchscript", tmp_path / "b", cache_dir=tmp_path / "cache")
    assert again.manifest["cache_hit"] is False and sha256_file(again.path) == again.sha256
    assert load_artifact(tmp_path / "cache" / first.manifest["cache_key"]).sha256 == again.sha256
    assert not [p.name for p in (tmp_path / "cache").iterdir() if p.name not in (".locks", again.manifest["cache_key"])]


def test_publishing_into_one_folder_at_once_never_fails_or_mixes(tmp_path):
    dest = tmp_path / "out" / "m-torchscript"
    dest.parent.mkdir()
    rounds, writers = 40, 4
    start = threading.Barrier(writers)

    def publish(i):
        for r in range(rounds):
            tmp = dest.parent / f".tmp-{i}-{r}"
            tmp.mkdir()
            for name in ("model.ptl", "manifest.json"):
                (tmp / name).write_text(f"{i}-{r}")
            start.wait(timeout=STATE_WAIT_S)
            _swap_into_place(tmp, dest)

    with ThreadPoolExecutor(writers) as pool:
        for f in [pool.submit(publish, i) for i in range(writers)]:
            f.result(timeout=STATE_WAIT_S * 2)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m-torchscript"]  # nothing set aside is left
    contents = {(dest / name).read_text() for name in ("model.ptl", "manifest.json")}
    assert len(contents) == 1 and sorted(p.name for p in dest.iterdir()) == ["manifest.json", "model.ptl"]


def test_the_cli_refuses_a_busy_device_with_device_wait_zero(tmp_path, tiny_artifacts):
    workdir = tmp_path / "device"
    targets = tmp_path / "targets.yaml"
    targets.write_text(f"targets:\n  bench-box:\n    transport: local\n    profile: local-x86_64\n"
                       f"    workdir: {workdir}\n")
    target = get_target("bench-box", targets)
    _plant_lock(target)
    res = subprocess.run([sys.executable, "-m", "edge", "bench", str(tiny_artifacts["torchscript"]),
                          "--target", "bench-box", "--targets-file", str(targets), "--iterations", "1",
                          "--device-wait", "0"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 7, res.stderr
    assert "'bench-box' is busy" in res.stderr and "Traceback" not in res.stderr
    assert _owner(target)["token"] == "planted"  # the refused bench left the lock alone
