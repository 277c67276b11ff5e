"""Transfers and commands when things go wrong: resumed uploads, hash tools, full disks,
keys edge cannot use, devices that refuse connections for a while (real sshd, real files)."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from edge.errors import AuthError, ConnectError, DeviceFullError, TransportError
from edge.targets import get_target, local_target
from edge.transports import connect
from edge.transports.base import _partial_key
from edge.transports.ssh import SshTransport


@pytest.fixture
def local(tmp_path):
    with connect(dataclasses.replace(local_target(), workdir=str(tmp_path / "work"))) as tr:
        yield tr


@pytest.fixture(scope="module")
def target(devicelab):
    return get_target(devicelab.names[0], devicelab.targets_file)


def _blob(path: Path, size: int, seed: int = 0) -> bytes:
    data = (hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1))[:size]
    path.write_bytes(data)
    return data


def test_a_partial_upload_is_resumed_not_resent(local, tmp_path):
    src = tmp_path / "model.bin"
    data = _blob(src, 1_000_000)
    dest = tmp_path / "work" / "model.bin"
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(f"{dest}.part-{_partial_key(src, len(data))}")
    partial.write_bytes(data[:600_000])  # what a cut link left behind
    res = local.put(src, str(dest))
    assert (res.skipped, res.bytes_sent) == (False, 400_000)
    assert dest.read_bytes() == data and not partial.exists()


def test_a_resumed_upload_that_does_not_verify_is_sent_whole(local, tmp_path):
    src = tmp_path / "model.bin"
    data = _blob(src, 300_000)
    dest = tmp_path / "work" / "model.bin"
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(f"{dest}.part-{_partial_key(src, len(data))}")
    partial.write_bytes(b"\0" * 100_000)  # not a prefix of the file
    res = local.put(src, str(dest))
    assert res.bytes_sent == 300_000 + 200_000  # the resumed tail, then the whole file
    assert dest.read_bytes() == data and sorted(os.listdir(dest.parent)) == ["model.bin"]


def test_two_concurrent_puts_of_one_file_both_succeed(tmp_path):
    src = tmp_path / "model.bin"
    data = _blob(src, 8_000_000)
    dest = str(tmp_path / "work" / "model.bin")
    results, errors = [], []

    def push():
        try:
            with connect(dataclasses.replace(local_target(), workdir=str(tmp_path / "work"))) as tr:
                results.append(tr.put(src, dest))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=push) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2
    assert Path(dest).read_bytes() == data
    assert sorted(os.listdir(tmp_path / "work")) == ["model.bin"]


def _tool_dir(tmp_path: Path, tools: list[str]) -> str:
    """A PATH with only these tools (the rest of a busybox-like device's shell)."""
    d = tmp_path / "bin"
    d.mkdir()
    for tool in tools + ["sh", "mkdir", "dirname", "basename", "mv", "rm", "cat", "sed", "head",
                         "tail", "find", "df", "awk"]:
        found = shutil.which(tool)
        if found:
            (d / tool).symlink_to(found)
    return str(d)


def test_without_python_or_sha256sum_the_hash_falls_back_to_openssl(tmp_path, monkeypatch):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed here")
    tgt = dataclasses.replace(local_target(), workdir=str(tmp_path / "work"),
                              python="/nonexistent/python3")
    monkeypatch.setenv("PATH", _tool_dir(tmp_path, ["openssl"]))
    src = tmp_path / "a.bin"
    data = _blob(src, 5000)
    with connect(tgt) as tr:
        tr.put(src, str(tmp_path / "work" / "a.bin"))
        assert tr.remote_sha256(str(tmp_path / "work" / "a.bin")) == hashlib.sha256(data).hexdigest()
        assert tr.hash_tool == "openssl"


def test_a_device_with_no_hash_tool_says_so(tmp_path, monkeypatch):
    tgt = dataclasses.replace(local_target(), workdir=str(tmp_path / "work"),
                              python="/nonexistent/python3")
    monkeypatch.setenv("PATH", _tool_dir(tmp_path, []))
    (tmp_path / "a.bin").write_bytes(b"x")
    with connect(tgt) as tr, pytest.raises(TransportError, match="no sha256 tool") as err:
        tr.remote_sha256(str(tmp_path / "a.bin"))
    assert "openssl" in str(err.value) and "python" in str(err.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")
def test_a_full_device_names_the_space_needed_and_free(target, tmp_path):
    with connect(target) as ssh:
        full = f"{target.workdir}/tiny-disk"
        ssh.run(["mkdir", "-p", full], timeout_s=30)
        ssh.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", full], timeout_s=30)
        try:
            src = tmp_path / "big.bin"
            _blob(src, 3_000_000)
            with pytest.raises(DeviceFullError, match=r"needs 3\.0 MB, 1\.0 MB are free"):
                ssh.put(src, f"{full}/model.bin")
            assert ssh.run(["ls", "-A", full], timeout_s=30).stdout == ""
        finally:
            ssh.run(["umount", full], timeout_s=30)


def _authorize(target, pub: Path):
    keys = Path(target.identity_file).with_name("authorized_keys")
    before = keys.read_text()
    keys.write_text(before + pub.read_text())
    return keys, before


def test_a_passphrase_key_is_named_and_works_through_ssh_agent(target, tmp_path, monkeypatch):
    key = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "s3cret-phrase", "-f", str(key)],
                   check=True)
    keys, before = _authorize(target, Path(f"{key}.pub"))
    agent = None
    try:
        monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
        locked = dataclasses.replace(target, identity_file=str(key))
        with pytest.raises(AuthError, match="protected by a passphrase") as err:
            SshTransport(locked).open()
        assert "ssh-add" in str(err.value) and "s3cret" not in str(err.value)
        sock = tmp_path / "agent.sock"
        agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
        askpass = tmp_path / "askpass"
        askpass.write_text("#!/bin/sh\necho s3cret-phrase\n")
        askpass.chmod(0o700)
        env = dict(os.environ, SSH_AUTH_SOCK=str(sock), SSH_ASKPASS=str(askpass),
                   SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
        for _ in range(600):  # the agent's socket appears once it listens
            if sock.exists() or agent.poll() is not None:
                break
            threading.Event().wait(0.05)
        subprocess.run(["ssh-add", str(key)], env=env, capture_output=True, check=True,
                       stdin=subprocess.DEVNULL)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        with SshTransport(locked) as tr:
            assert tr.run(["true"], timeout_s=30).exit_code == 0
    finally:
        keys.write_text(before)
        if agent is not None:
            agent.kill()
            agent.wait()


def test_an_unreadable_or_missing_key_file_is_said_plainly(target, tmp_path):
    with pytest.raises(AuthError, match="cannot read identity_file"):
        SshTransport(dataclasses.replace(target, identity_file=str(tmp_path))).open()  # a directory
    with pytest.raises(AuthError, match="does not exist"):
        SshTransport(dataclasses.replace(target, identity_file=str(tmp_path / "nope"))).open()
    pub = Path(target.identity_file + ".pub")
    with pytest.raises(AuthError, match="not a private key"):
        SshTransport(dataclasses.replace(target, identity_file=str(pub))).open()


class _FlakyProxy:
    """A TCP proxy to the device that hangs up on the first ``drops`` connections."""

    def __init__(self, host: str, port: int, drops: int):
        self.host, self.port, self.drops, self.seen = host, port, drops, 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = self.server.getsockname()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.seen += 1
            if self.seen <= self.drops:
                conn.close()
                continue
            upstream = socket.create_connection((self.host, self.port))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.server.close()


def test_a_device_that_hangs_up_at_first_is_retried_with_backoff(target, tmp_path):
    proxy = _FlakyProxy(target.host, target.port, drops=2)
    known = tmp_path / "known_hosts"
    line = Path(target.known_hosts).read_text().splitlines()[0].split(" ", 1)[1]
    known.write_text(f"[127.0.0.1]:{proxy.address[1]} {line}\n")
    via = dataclasses.replace(target, host="127.0.0.1", port=proxy.address[1],
                              known_hosts=str(known), connect_backoff_s=0.05)
    try:
        with SshTransport(dataclasses.replace(via, connect_retries=3)) as tr:
            assert tr.run(["true"], timeout_s=30).exit_code == 0
        assert proxy.seen == 3
        proxy.seen = 0
        with pytest.raises(ConnectError, match=r"cannot connect \(2 attempts\)"):
            SshTransport(dataclasses.replace(via, connect_retries=1)).open()
        assert proxy.seen == 2
    finally:
        proxy.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")
def test_a_disk_that_fills_up_during_the_upload_is_named_and_cleaned(tmp_path, monkeypatch):
    full = tmp_path / "tiny-disk"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)], check=True)
    try:
        src = tmp_path / "big.bin"
        _blob(src, 3_000_000)
        with connect(dataclasses.replace(local_target(), workdir=str(full))) as tr:
            real = tr.free_bytes
            answers = iter([10**9])  # the first look says plenty: someone else fills the disk later
            monkeypatch.setattr(tr, "free_bytes", lambda d: next(answers, None) or real(d))
            with pytest.raises(DeviceFullError, match=r"needs 3\.0 MB, 0\.0 MB are free"):
                tr.put(src, str(full / "model.bin"))
        assert os.listdir(full) == []
    finally:
        subprocess.run(["umount", str(full)], check=True)
