"""AdbTransport against the device lab's real adbd devices (Debian's adbd, each in its own
network namespace, through the session's private adb server): the contract test_ssh.py holds
the SSH transport to, plus what only adb has (offline devices, serials, two devices at once).

Every wait here waits for a state (a file on the device, a state in `adb devices`), never
for a fixed time."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest

from edge.errors import CommandTimeoutError, ConnectError, RemoteCommandError, TransportError
from edge.targets import get_target, load_targets
from edge.transports import connect
from edge.transports.adb import AdbTransport
from edge.transports.device_shell import COMMIT_SCRIPT
from labtools import load_devicelab

dl = load_devicelab()
WAIT_S = 120.0  # upper bound of every wait for a state; never a sleep


@pytest.fixture(scope="module")
def target(adblab):
    return get_target(adblab.names[0], adblab.targets_file)


@pytest.fixture(scope="module")
def other(adblab):
    return get_target(adblab.names[1], adblab.targets_file)


@pytest.fixture(scope="module")
def adb(target):
    with connect(target) as tr:
        yield tr


def _write(path: Path, size_bytes: int, seed: int = 0) -> str:
    data = (hashlib.sha256(str(seed).encode()).digest() * (size_bytes // 32 + 1))[:size_bytes]
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _until(what: str, probe, timeout_s: float = WAIT_S):
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not (value := probe()):
        assert time.monotonic() < deadline, f"{what} within {timeout_s:g} s"
        time.sleep(0.01)
    return value


def test_lab_writes_adb_targets_and_adb_lists_them(adblab, adb_server):
    targets = load_targets(adblab.targets_file)
    states = dl.adblab.device_states(adb_server)
    for dev in adblab.state["devices"]:
        tgt = targets[dev["name"]]
        assert (tgt.transport, tgt.serial) == ("adb", dev["serial"])
        assert tgt.workdir == str(Path(dev["dir"]) / "work")
        assert not 5555 <= dev["port"] <= 5585  # the adb server probes those as emulators
        assert dev["netns"] and dev["memory_limit_mb"] and states[dev["serial"]] == "device"
    assert not [s for s in states if s.startswith("emulator-")]
    assert all(row["running"] for row in dl.status(adblab.dir))


def test_run_returns_output_exit_code_and_stderr_apart(adb, target):
    res = adb.run(["sh", "-c", "echo 'a b'; echo err >&2; exit 0"], timeout_s=30)
    assert (res.exit_code, res.stdout, res.stderr) == (0, "a b\n", "err\n")
    # adb shell joins its arguments for the device's sh: each must arrive verbatim
    args = ["$HOME; x", "it's", "two  spaces", "*", "new\nline", "ünï", ""]
    out = adb.run([target.python, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))",
                   *args], timeout_s=30).stdout
    assert json.loads(out) == args
    with pytest.raises(RemoteCommandError, match=r"exited 3.*oops"):
        adb.run(["sh", "-c", "echo oops >&2; exit 3"], timeout_s=30)
    assert adb.run(["sh", "-c", "exit 42"], timeout_s=30, check=False).exit_code == 42


def test_the_device_reads_its_memory_limit(adb, adblab):
    own = 'sed -n "s/^[0-9]*:[^:]*memory[^:]*://p" /proc/self/cgroup'  # as TIMEOUT_WRAPPER does
    limit = adb.run(["sh", "-c", f'cat "/sys/fs/cgroup/memory$({own})/memory.limit_in_bytes"'],
                    timeout_s=30).stdout
    assert int(limit) == adblab.state["devices"][0]["memory_limit_mb"] * 1024 * 1024


def test_timeout_kills_the_command_on_the_device(adb):
    seconds = f"31.{threading.get_ident() % 10_000:04d}"  # a command line no one else runs
    with pytest.raises(CommandTimeoutError, match=rf"`sleep {seconds}` still running after 1 s"):
        adb.run(["sleep", seconds], timeout_s=1)
    count = f"ps -eo args | grep -c '^sleep {seconds}' || true"
    _until(f"sleep {seconds} killed on the device",
           lambda: adb.run(["sh", "-c", count], timeout_s=30).stdout.strip() == "0")


def test_put_verifies_renames_and_skips_unchanged(adb, target, tmp_path):
    src = tmp_path / "blob.bin"
    sha = _write(src, 3_000_000)
    remote = f"{target.workdir}/put-test/sub/blob.bin"
    first = adb.put(src, remote)
    assert (first.skipped, first.bytes_sent, first.sha256) == (False, 3_000_000, sha)
    assert adb.run(["sha256sum", remote], timeout_s=30).stdout.split()[0] == sha
    assert (adb.put(src, remote).skipped, adb.put(src, remote).bytes_sent) == (True, 0)
    sha = _write(src, 2_000_000, seed=1)  # changed and shorter: pushed again, nothing left over
    assert adb.put(src, remote).bytes_sent == 2_000_000
    assert adb.remote_sha256(remote) == sha
    assert adb.run(["ls", "-A", f"{target.workdir}/put-test/sub"], timeout_s=30).stdout == "blob.bin\n"
    back = tmp_path / "back.bin"
    adb.get(remote, back)
    assert back.read_bytes() == src.read_bytes()


def test_commit_refuses_a_corrupt_upload(adb, target, tmp_path):
    src = tmp_path / "c.bin"
    _write(src, 1000)
    tmp, final = f"{target.workdir}/corrupt/c.bin.part-x", f"{target.workdir}/corrupt/c.bin"
    adb.run(["mkdir", "-p", f"{target.workdir}/corrupt"], timeout_s=30)
    adb._upload(src, tmp, 30)
    with pytest.raises(RemoteCommandError, match="sha256 mismatch"):
        adb.run(["sh", "-c", COMMIT_SCRIPT, "sh", tmp, final, "0" * 64, target.python], timeout_s=30)
    assert adb.run(["ls", "-A", f"{target.workdir}/corrupt"], timeout_s=30).stdout == ""


def test_failed_put_leaves_old_file_and_no_temp(adb, target, tmp_path):
    full = f"{target.workdir}/full"  # a 1 MB filesystem on the device: the push runs out of space
    adb.run(["mkdir", "-p", full], timeout_s=30)
    adb.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", full], timeout_s=30)
    try:
        small, big = tmp_path / "small.bin", tmp_path / "big.bin"
        small_sha = _write(small, 1000)
        _write(big, 3_000_000)
        adb.put(small, f"{full}/model.bin")
        with pytest.raises(TransportError):
            adb.put(big, f"{full}/model.bin")
        assert adb.run(["ls", "-A", full], timeout_s=30).stdout.split() == ["model.bin"]
        assert adb.remote_sha256(f"{full}/model.bin") == small_sha
    finally:
        adb.run(["umount", full], timeout_s=30)


def test_failed_pull_is_a_transport_error(adb, target, tmp_path):
    with pytest.raises(TransportError, match="adb pull of .*no-such-file") as err:
        adb.get(f"{target.workdir}/no-such-file", tmp_path / "x")
    assert type(err.value) is TransportError and not (tmp_path / "x").exists()


def test_unknown_serial_is_a_connect_error_listing_the_devices(target):
    with pytest.raises(ConnectError, match="edge-test-no-such-device.*missing") as err:
        AdbTransport(dataclasses.replace(target, serial="edge-test-no-such-device")).open()
    assert target.serial in str(err.value)  # what `adb devices` does list
    closed = f"{target.serial.rsplit(':', 1)[0]}:1"  # the device's address, no adbd there
    with pytest.raises(ConnectError, match=rf"`adb connect {closed}` failed"):
        AdbTransport(dataclasses.replace(target, serial=closed)).open()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed by the commit in the meantime
        return 0


def _state(serial: str) -> str:
    return dl.adblab.device_states().get(serial, "missing")


def test_offline_device_is_a_connect_error_until_it_is_back(adblab, other):
    with connect(other) as tr:  # connected before it drops off
        dl.unplug(adblab.dir, other.name)
        try:
            _until("adb lists the unplugged device as offline",
                   lambda: _state(other.serial) == "offline")
            with pytest.raises(ConnectError, match="offline"):
                tr.run(["true"], timeout_s=30)
            with pytest.raises(ConnectError, match="offline.*adb reconnect"):
                AdbTransport(other).open()
        finally:
            dl.replug(adblab.dir, other.name)
        assert tr.run(["echo", "back"], timeout_s=30).stdout == "back\n"


def test_device_lost_mid_push_leaves_the_old_file_or_the_new_one(adblab, other, tmp_path):
    src = tmp_path / "model.bin"
    old_sha = _write(src, 1000)
    dest = f"{other.workdir}/lost/model.bin"
    with connect(other) as tr:
        tr.put(src, dest)
    data = os.urandom(6_000_000)  # incompressible (adb push compresses): 6 s at 8 Mbit/s
    src.write_bytes(data)
    new_sha = hashlib.sha256(data).hexdigest()
    dl.set_rate(adblab.dir, other.name, 8)
    errors = []

    def push():
        try:
            with connect(other) as tr:
                tr.put(src, dest)
        except TransportError as exc:
            errors.append(exc)

    pusher = threading.Thread(target=push)
    try:
        pusher.start()
        lost = Path(dest).parent  # the lab device's work dir is on this machine's filesystem
        _until("the push under way", lambda: not pusher.is_alive() or any(
            0 < _size(p) < len(data) for p in lost.glob("model.bin.part-*")))
        assert pusher.is_alive(), f"the push ended before it could be cut: {errors}"
        dl.unplug(adblab.dir, other.name)
        pusher.join(WAIT_S)
        assert not pusher.is_alive() and len(errors) == 1
        assert isinstance(errors[0], ConnectError), errors[0]
        assert hashlib.sha256(Path(dest).read_bytes()).hexdigest() == old_sha
    finally:
        pusher.join(WAIT_S)
        if _state(other.serial) != "device":
            dl.replug(adblab.dir, other.name)
        dl.set_rate(adblab.dir, other.name, adblab.state["devices"][1]["rate_mbit"] or 0)
    with connect(other) as tr:
        res = tr.put(src, dest)
        assert (res.skipped, res.sha256) == (False, new_sha)
        assert tr.remote_sha256(dest) == new_sha
        assert tr.run(["ls", "-A", Path(dest).parent.as_posix()], timeout_s=30).stdout == "model.bin\n"


def test_two_devices_at_once_each_answers_for_its_own_serial(adblab, tmp_path):
    targets = [get_target(name, adblab.targets_file) for name in adblab.names]
    results: dict[str, list] = {t.name: [] for t in targets}
    failures = []

    def work(tgt, index):
        try:
            src = tmp_path / f"{tgt.name}.bin"
            sha = _write(src, 500_000, seed=index)
            with connect(tgt) as tr:
                for _ in range(5):
                    addr = tr.run(["ip", "-4", "-o", "addr", "show"], timeout_s=30).stdout
                    results[tgt.name].append((addr, tr.put(src, f"{tgt.workdir}/mine.bin").sha256,
                                              tr.remote_sha256(f"{tgt.workdir}/mine.bin"), sha))
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(t, i)) for i, t in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert not failures and all(len(rows) == 5 for rows in results.values())
    for tgt, dev in zip(targets, adblab.state["devices"]):
        others = [d["address"] for d in adblab.state["devices"] if d is not dev]
        for addr, pushed, on_device, sha in results[tgt.name]:
            assert f"{dev['address']}/" in addr and not any(f"{o}/" in addr for o in others)
            assert pushed == on_device == sha
