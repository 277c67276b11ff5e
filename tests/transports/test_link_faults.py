"""Faults the device lab injects into a real SSH device: sessions killed mid-push and
mid-command, a link taken down, a memory cgroup that kills the runner, a small disk.

The lab device has its own network namespace (root), a 100 Mbit/s link, 256 MB of memory
and a 64 MB work filesystem.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from pathlib import Path

import pytest

from labtools import load_devicelab, process_running
from edge.errors import (CommandTimeoutError, ConnectError, DeviceFullError, OutOfMemoryError,
                         TransportError)
from edge.targets import get_target
from edge.transports import connect
from edge.transports.base import _partial_key

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the fault lab needs network "
                                "namespaces and mounts (root)")

MEMORY_MB, DISK_MB, SIZE = 256, 64, 24_000_000


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    dl = load_devicelab()
    lab_dir = tmp_path_factory.mktemp("faultlab")
    state = dl.start(devices=1, lab_dir=lab_dir, rate_mbit=100, memory_mb=MEMORY_MB,
                     disk_mb=DISK_MB)
    try:
        if not state["devices"][0]["netns"]:
            pytest.skip("no network namespace could be set up here")
        yield dl, lab_dir, state["devices"][0]["name"], state["targets_file"]
    finally:
        dl.stop(lab_dir)


@pytest.fixture
def target(lab):
    _, _, name, targets_file = lab
    return dataclasses.replace(get_target(name, targets_file), stall_timeout_s=3,
                               connect_retries=0)


@pytest.fixture(scope="module")
def blob(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("blob") / "model.bin"
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _wait(probe, what: str, timeout_s: float = 120.0):
    """Poll ``probe`` until it returns something true (state, not time, is what we wait for)."""
    done = threading.Event()
    for _ in range(int(timeout_s / 0.01)):
        value = probe()
        if value:
            return value
        done.wait(0.01)
    raise AssertionError(f"gave up waiting for {what}")


def _push_in_background(target, src: Path, remote: str):
    outcome: dict = {}

    def push():
        try:
            with connect(target) as tr:
                outcome["result"] = tr.put(src, remote)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=push)
    thread.start()
    return thread, outcome


def _partial_size(watch, remote: str) -> int:
    size = watch._remote_size(remote)
    return size if isinstance(size, int) and size > 0 else 0


@pytest.mark.parametrize("fault", ["kill-sessions", "cut-link"])
def test_a_push_cut_at_half_leaves_nothing_at_the_final_path_and_resumes(lab, target, blob, fault):
    dl, lab_dir, name, _ = lab
    src, sha = blob
    remote = f"{target.workdir}/{fault}/model.bin"
    partial = f"{remote}.part-{_partial_key(src, SIZE)}"
    with connect(target) as watch:
        watch.run(["rm", "-rf", f"{target.workdir}/{fault}"], timeout_s=30)
        thread, outcome = _push_in_background(target, src, remote)
        try:
            _wait(lambda: _partial_size(watch, partial) >= SIZE // 2, "half the upload")
        finally:
            if fault == "kill-sessions":
                dl.kill_sessions(lab_dir, name)
            else:
                dl.cut(lab_dir, name)
            thread.join()
    if fault == "cut-link":
        dl.restore(lab_dir, name)
    assert isinstance(outcome.get("error"), (ConnectError, CommandTimeoutError)), outcome
    assert "resumes" in str(outcome["error"]) or "lost" in str(outcome["error"])
    with connect(target) as tr:
        assert tr.remote_sha256(remote) is None  # nothing at the final path
        again = tr.put(src, remote)
        assert again.bytes_sent <= 0.6 * SIZE  # resumed, not sent again
        assert tr.remote_sha256(remote) == sha
        left = tr.run(["ls", "-A", f"{target.workdir}/{fault}"], timeout_s=30).stdout.split()
        assert left == ["model.bin"]


def test_a_dropped_connection_while_a_command_runs_names_the_device(lab, target):
    dl, lab_dir, name, _ = lab
    outcome: dict = {}

    def run():
        try:
            with connect(target) as tr:
                tr.run(["sh", "-c", "echo started; exec sleep 97.5"], timeout_s=300)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        _wait(lambda: _running("sleep 97.5"), "the command to start on the device")
    finally:
        dl.kill_sessions(lab_dir, name)
        thread.join()
    err = outcome.get("error")
    assert isinstance(err, ConnectError), outcome
    assert "connection lost" in str(err) and f"'{name}'" in str(err)


def test_a_link_that_goes_silent_while_a_command_runs_fails_after_the_stall_time(lab, target):
    dl, lab_dir, name, _ = lab
    outcome: dict = {}
    with connect(target) as tr:
        tr.run(["true"], timeout_s=30)  # connected before the link goes down

        def run():
            try:
                tr.run(["sleep", "98.5"], timeout_s=600)
            except Exception as exc:  # noqa: BLE001 - the test inspects it
                outcome["error"] = exc

        thread = threading.Thread(target=run)
        thread.start()
        try:
            _wait(lambda: _running("sleep 98.5"), "the command to start on the device")
            dl.cut(lab_dir, name)
            thread.join(timeout=300)  # keepalives go unanswered: the link is declared dead
        finally:
            dl.restore(lab_dir, name)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), ConnectError), outcome


def _running(text: str) -> bool:
    """Whether a process whose command line contains ``text`` runs (the lab's devices are local)."""
    return process_running(text)


def test_a_runner_killed_by_the_memory_cgroup_is_reported_as_out_of_memory(target):
    grab = "x = bytearray(512 * 2**20); x[::4096] = b'x' * (len(x) // 4096)"
    with connect(target) as tr:
        with pytest.raises(OutOfMemoryError, match=r"out of memory, memory limit 268 MB"):
            tr.run([target.python, "-c", grab], timeout_s=120, check=False)
        assert tr.run(["true"], timeout_s=30).exit_code == 0  # the device itself is fine


def test_a_full_device_refuses_the_push_before_sending(target, tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate((DISK_MB + 16) * 2**20)
    remote = f"{target.workdir}/full/big.bin"
    with connect(target) as tr:
        with pytest.raises(DeviceFullError, match=r"it needs 83\.9 MB, \d+\.\d MB are free") as err:
            tr.put(big, remote)
        assert "workdir" in str(err.value)
        assert tr.run(["ls", "-A", f"{target.workdir}/full"], timeout_s=30).stdout == ""
        assert isinstance(err.value, TransportError)
