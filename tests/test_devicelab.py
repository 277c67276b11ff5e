"""scripts/devicelab: private folders, fresh keys, clean failed starts, parallel labs, faults."""
from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from labtools import REPO, load_devicelab

dl = load_devicelab()
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="namespaces, chown and mounts need root")


def _until(probe, what: str, timeout_s: float = 120.0):
    """Poll until ``probe()`` is truthy (state, not a sleep of fixed length)."""
    deadline = time.monotonic() + timeout_s
    while not (value := probe()):
        assert time.monotonic() < deadline, f"{what} within {timeout_s:g} s"
        time.sleep(0.05)
    return value


def _ssh_argv(dev: dict, lab_dir: Path, command: str) -> list[str]:
    return ["ssh", "-i", f"{dev['dir']}/id_ed25519",
            "-o", f"UserKnownHostsFile={lab_dir}/known_hosts", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=60",
            "-p", str(dev["port"]), f"{getpass.getuser()}@{dev['address']}", command]


def _ssh(dev: dict, lab_dir: Path, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(_ssh_argv(dev, lab_dir, command), capture_output=True, text=True,
                          timeout=300)


def _banner(dev: dict) -> socket.socket:
    sock = socket.create_connection((dev["address"], dev["port"]), timeout=60)
    assert sock.recv(256).startswith(b"SSH-2.0-")
    return sock


def _leftovers(lab_dir: Path) -> list[str]:
    """What is left of the lab in ``lab_dir``: sshd processes, namespaces, links, cgroups."""
    lid = dl.lab_id(lab_dir)
    found = [cmd for _, cmd in dl._procs().values() if "sshd" in cmd and f"{lab_dir}/" in cmd]
    if os.geteuid() == 0:
        listing = subprocess.run("ip netns list; ip -o link show", shell=True, capture_output=True,
                                 text=True).stdout
        found += [line for line in listing.splitlines() if f"-{lid}" in line]
    cgroups = dl._cgroup_root()
    return found + ([str(p) for p in cgroups.glob(f"*{lid}*")] if cgroups else [])


def test_default_dir_is_private_and_per_user(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert dl.default_dir() == tmp_path / "edge-devicelab"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert dl.default_dir() == Path(tempfile.gettempdir()) / f"edge-devicelab-{os.geteuid()}"
    made = dl.private_dir(tmp_path / "new" / "lab")
    assert made.stat().st_mode & 0o777 == 0o700
    assert dl.LOCK_FILE.name.endswith(f"-{os.geteuid()}.lock")


def test_refuses_a_folder_others_can_write(tmp_path, capsys):
    lab_dir = tmp_path / "lab"
    lab_dir.mkdir(mode=0o777)
    lab_dir.chmod(0o777)
    with pytest.raises(dl.LabError, match="writable by group or others"):
        dl.start(lab_dir=lab_dir, netns=False)
    assert dl.main(["start", "--dir", str(lab_dir), "--no-netns"]) == 1
    err = capsys.readouterr().err
    assert "devicelab: error:" in err and "Traceback" not in err
    assert list(lab_dir.iterdir()) == []


def test_refuses_a_symlinked_lock_file(monkeypatch, tmp_path):
    link = tmp_path / "edge-devicelab.lock"
    link.symlink_to(tmp_path / "elsewhere")
    monkeypatch.setattr(dl, "LOCK_FILE", link)
    with pytest.raises(dl.LabError, match="lock file"):
        dl._lock_fd()
    assert not (tmp_path / "elsewhere").exists()


@root_only
def test_refuses_a_folder_or_lab_json_of_another_user(tmp_path, capsys):
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        state = tmp_path / "lab.json"
        state.write_text(json.dumps({"devices": [{"name": "lab0", "dir": str(tmp_path / "dev0"),
                                                  "pid": sleeper.pid}]}))
        os.chown(state, 65534, 65534)
        with pytest.raises(dl.LabError, match="not a regular file of yours"):
            dl.stop(tmp_path)
        assert dl.main(["stop", "--dir", str(tmp_path)]) == 1
        assert "Traceback" not in capsys.readouterr().err
        os.chown(state, os.getuid(), os.getgid())
        os.chown(tmp_path, 65534, 65534)
        with pytest.raises(dl.LabError, match="belongs to uid 65534"):
            dl.status(tmp_path)
        assert sleeper.poll() is None
    finally:
        os.chown(tmp_path, os.getuid(), os.getgid())
        sleeper.kill()
        sleeper.wait()


def test_stop_spares_a_pid_that_is_not_this_labs_sshd(tmp_path, caplog):
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        (tmp_path / "lab.json").write_text(json.dumps({"devices": [
            {"name": "lab0", "dir": str(tmp_path / "dev0"), "pid": sleeper.pid}]}))
        caplog.set_level("INFO", logger="devicelab")
        assert dl.stop(tmp_path) == ["lab0"]
        assert sleeper.poll() is None
        assert f"not killing pid {sleeper.pid}" in caplog.text
        assert not (tmp_path / "lab.json").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_start_makes_fresh_keys_and_loopback_refuses_cut(tmp_path):
    dev_dir = tmp_path / "dev0"
    dev_dir.mkdir()
    for key in ("ssh_host_ed25519_key", "id_ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "planted", "-f",
                        str(dev_dir / key)], check=True)
    planted = {key: (dev_dir / f"{key}.pub").read_text()
               for key in ("ssh_host_ed25519_key", "id_ed25519")}
    try:
        state = dl.start(lab_dir=tmp_path, netns=False)
        for key, text in planted.items():
            assert (dev_dir / f"{key}.pub").read_text() != text
        assert planted["id_ed25519"] not in (dev_dir / "authorized_keys").read_text()
        known_hosts = (tmp_path / "known_hosts").read_text()
        assert planted["ssh_host_ed25519_key"].split()[1] not in known_hosts
        assert [row["running"] for row in dl.status(tmp_path)] == [True]
        with pytest.raises(RuntimeError, match="loopback"):
            dl.cut(tmp_path, state["devices"][0]["name"])
    finally:
        dl.stop(tmp_path)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("step,fail_on", [("_wait_pid", 1), ("_wait_pid", 2), ("_wait_port", 1)])
def test_failed_start_leaves_nothing_behind(monkeypatch, tmp_path, step, fail_on):
    real, calls = getattr(dl, step), []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) == fail_on:
            raise dl.LabError(f"injected failure of {step}")
        return real(*args, **kwargs)

    monkeypatch.setattr(dl, step, flaky)
    try:
        with pytest.raises(dl.LabError, match="injected"):
            dl.start(devices=2, lab_dir=tmp_path, memory_mb=200)
        assert _leftovers(tmp_path) == []
        assert not (tmp_path / "lab.json").exists()
    finally:
        dl.stop(tmp_path)


@root_only
def test_used_slots_counts_leftover_links_and_addresses():
    host_if = "elab249h"
    subprocess.run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", "elab249p"],
                   check=True, capture_output=True)
    try:
        subprocess.run(["ip", "addr", "add", "10.77.248.1/24", "dev", host_if], check=True)
        assert {248, 249} <= dl._used_slots()
    finally:
        subprocess.run(["ip", "link", "del", host_if])


@root_only
def test_two_labs_started_at_once_do_not_collide(tmp_path):
    dirs = [tmp_path / "a", tmp_path / "b"]
    script = str(REPO / "scripts" / "devicelab")
    try:
        starts = [subprocess.Popen([sys.executable, script, "start", "--dir", str(d)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for d in dirs]
        for proc in starts:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
        devices = [json.loads((d / "lab.json").read_text())["devices"][0] for d in dirs]
        for key in ("netns", "host_if", "address"):
            assert devices[0][key] and devices[0][key] != devices[1][key]
        for dev in devices:
            _banner(dev).close()
    finally:
        for d in dirs:
            dl.stop(d)
    assert _leftovers(dirs[0]) == _leftovers(dirs[1]) == []


@pytest.fixture(scope="module")
def netlab(tmp_path_factory):
    """One namespaced device with a 200 MB memory limit and an 8 MB work tmpfs."""
    lab_dir = tmp_path_factory.mktemp("faultlab")
    try:
        state = dl.start(devices=1, lab_dir=lab_dir, memory_mb=200, disk_mb=8)
        yield lab_dir, state["devices"][0]
    finally:
        dl.stop(lab_dir)


@root_only
def test_memory_and_disk_overrides_are_recorded(netlab):
    lab_dir, dev = netlab
    saved = json.loads((lab_dir / "lab.json").read_text())
    assert (saved["disk_mb"], saved["devices"][0]["disk_mb"]) == (8, 8)
    assert dl.status(lab_dir)[0]["disk_mb"] == 8
    if dev["cgroup"]:
        assert dev["memory_limit_mb"] == 200
        assert Path(dev["cgroup"], "memory.limit_in_bytes").read_text().strip() == str(200 << 20)


def _assert_work_dir_fills_up(dev: dict, lab_dir: Path) -> None:
    work = f"{dev['dir']}/work"
    res = _ssh(dev, lab_dir, f"dd if=/dev/zero of={work}/fill bs=1M count=16; rm -f {work}/fill")
    assert "No space left on device" in res.stderr


@root_only
def test_disk_mb_bounds_the_work_dir(netlab):
    _assert_work_dir_fills_up(netlab[1], netlab[0])


@root_only
def test_disk_mb_bounds_the_work_dir_in_loopback_mode_too(tmp_path):
    try:
        _assert_work_dir_fills_up(dl.start(lab_dir=tmp_path, netns=False, disk_mb=4)["devices"][0],
                                  tmp_path)
    finally:
        dl.stop(tmp_path)
    assert _leftovers(tmp_path) == []


@root_only
def test_kill_sessions_drops_sessions_but_keeps_the_listener(netlab):
    lab_dir, dev = netlab
    session = subprocess.Popen(_ssh_argv(dev, lab_dir, "sleep 3600"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        def running() -> bool:
            procs = dl._procs()
            return any(procs[p][1].startswith("sleep 3600")
                       for p in dl._descendants([dev["pid"]], procs))

        _until(running, "the session's command did not start")
        assert dl.kill_sessions(lab_dir, dev["name"]) >= 2
        assert session.wait(timeout=120) != 0
        assert dl.status(lab_dir)[0]["running"]
        assert _ssh(dev, lab_dir, "true").returncode == 0
    finally:
        session.kill()
        session.wait()


@root_only
def test_cut_stalls_tcp_without_reset_and_restore_resumes(netlab):
    lab_dir, dev = netlab
    sock = _banner(dev)
    try:
        dl.cut(lab_dir, dev["name"])
        sock.sendall(b"SSH-2.0-devicelab-test\r\n")
        sock.settimeout(2)
        with pytest.raises(TimeoutError):
            sock.recv(256)
        dl.restore(lab_dir, dev["name"])
        sock.settimeout(120)
        assert sock.recv(256)
    finally:
        dl.restore(lab_dir, dev["name"])
        sock.close()


@root_only
def test_cli_fault_commands(netlab, capsys):
    lab_dir, dev = netlab
    assert dl.main(["kill-sessions", dev["name"], "--dir", str(lab_dir)]) == 0
    assert dl.main(["cut", dev["name"], "--dir", str(lab_dir)]) == 0
    assert dl.main(["restore", dev["name"], "--dir", str(lab_dir)]) == 0
    assert "link up" in capsys.readouterr().out
    _banner(dev).close()
    assert dl.main(["cut", "nope", "--dir", str(lab_dir)]) == 1
    err = capsys.readouterr().err
    assert "no device 'nope'" in err and "Traceback" not in err
