"""SshTransport against the device lab's real sshd."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import subprocess

import pytest

from edge.errors import (AuthError, CommandTimeoutError, ConnectError, HostKeyError,
                         RemoteCommandError, TransportError)
from edge.targets import get_target
from edge.transports import connect
from edge.transports.device_shell import COMMIT_SCRIPT as _COMMIT_SCRIPT
from edge.transports.ssh import SshTransport


@pytest.fixture(scope="module")
def target(devicelab):
    return get_target(devicelab.names[0], devicelab.targets_file)


@pytest.fixture(scope="module")
def ssh(target):
    with connect(target) as tr:
        yield tr


def _write(path, size_bytes: int, seed: int = 0) -> str:
    data = (hashlib.sha256(str(seed).encode()).digest() * (size_bytes // 32 + 1))[:size_bytes]
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_constructing_does_not_connect(target):
    tr = SshTransport(target)
    assert tr._client is None
    tr.close()  # closing an unopened transport is harmless


def test_run_returns_output_and_exit_code(ssh):
    res = ssh.run(["sh", "-c", "echo 'a b'; echo err >&2; exit 0"], timeout_s=30)
    assert (res.exit_code, res.stdout, res.stderr) == (0, "a b\n", "err\n")
    assert res.argv[0] == "sh" and res.duration_s > 0
    # argv elements are passed verbatim, never re-split by the remote shell
    assert ssh.run(["echo", "$HOME; x"], timeout_s=30).stdout == "$HOME; x\n"


def test_remote_failure_raises_with_stderr_tail(ssh):
    with pytest.raises(RemoteCommandError, match=r"exited 3.*oops"):
        ssh.run(["sh", "-c", "echo oops >&2; exit 3"], timeout_s=30)
    assert ssh.run(["sh", "-c", "exit 3"], timeout_s=30, check=False).exit_code == 3


def test_timeout_stops_the_command(ssh):
    with pytest.raises(CommandTimeoutError, match="still running after 1 s"):
        ssh.run(["sleep", "31.5"], timeout_s=1)
    # the device-side timeout (1 s + 2 s grace) kills it: wait for that state, well short
    # of the 31.5 s the command would otherwise run
    count = "ps -eo args | grep -c '^sleep 31.5' || true"
    for _ in range(1000):
        if ssh.run(["sh", "-c", count], timeout_s=30).stdout.strip() == "0":
            break
    assert ssh.run(["sh", "-c", count], timeout_s=30).stdout.strip() == "0"


def test_put_verifies_and_skips_unchanged(ssh, target, tmp_path):
    src = tmp_path / "blob.bin"
    sha = _write(src, 3_000_000)
    remote = f"{target.workdir}/put-test/sub/blob.bin"
    first = ssh.put(src, remote)
    assert (first.skipped, first.bytes_sent, first.sha256) == (False, 3_000_000, sha)
    assert ssh.run(["sha256sum", remote], timeout_s=30).stdout.split()[0] == sha
    second = ssh.put(src, remote)
    assert (second.skipped, second.bytes_sent) == (True, 0)
    _write(src, 3_000_000, seed=1)  # changed content is pushed again
    assert ssh.put(src, remote).bytes_sent == 3_000_000
    back = tmp_path / "back.bin"
    ssh.get(remote, back)
    assert back.read_bytes() == src.read_bytes()


def test_commit_refuses_a_corrupt_upload(ssh, target, tmp_path):
    src = tmp_path / "c.bin"
    _write(src, 1000)
    tmp, final = f"{target.workdir}/corrupt/c.bin.tmp-x", f"{target.workdir}/corrupt/c.bin"
    ssh.run(["mkdir", "-p", f"{target.workdir}/corrupt"], timeout_s=30)
    ssh._upload(src, tmp, 30)
    with pytest.raises(RemoteCommandError, match="sha256 mismatch"):
        ssh.run(["sh", "-c", _COMMIT_SCRIPT, "sh", tmp, final, "0" * 64, target.python], timeout_s=30)
    assert ssh.run(["ls", "-A", f"{target.workdir}/corrupt"], timeout_s=30).stdout == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a full filesystem needs root")
def test_failed_put_leaves_old_file_and_no_temp(ssh, target, tmp_path):
    full = f"{target.workdir}/full"  # a 1 MB filesystem on the device: the upload runs out of space
    ssh.run(["mkdir", "-p", full], timeout_s=30)
    ssh.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", full], timeout_s=30)
    try:
        small, big = tmp_path / "small.bin", tmp_path / "big.bin"
        small_sha = _write(small, 1000)
        _write(big, 3_000_000)
        ssh.put(small, f"{full}/model.bin")
        with pytest.raises(TransportError):
            ssh.put(big, f"{full}/model.bin")  # ENOSPC half way
        assert ssh.run(["ls", "-A", full], timeout_s=30).stdout.split() == ["model.bin"]
        assert ssh.remote_sha256(f"{full}/model.bin") == small_sha
    finally:
        ssh.run(["umount", full], timeout_s=30)


def test_changed_host_key_is_refused(target, tmp_path):
    other_key = open(target.identity_file + ".pub").read().split()[:2]  # some other ed25519 key
    known = tmp_path / "known_hosts"
    known.write_text(f"[{target.host}]:{target.port} {other_key[0]} {other_key[1]}\n")
    with pytest.raises(HostKeyError, match="CHANGED") as err:
        SshTransport(dataclasses.replace(target, known_hosts=str(known))).open()
    assert "ssh-keygen -R" in str(err.value)


def test_unknown_host_refused_then_trusted_and_recorded(target, tmp_path):
    known = tmp_path / "known_hosts"
    tgt = dataclasses.replace(target, known_hosts=str(known))
    with pytest.raises(HostKeyError, match="--trust-new-host"):
        SshTransport(tgt).open()
    assert not known.exists()
    with SshTransport(tgt, trust_new_host=True) as tr:
        assert tr.run(["true"], timeout_s=30).exit_code == 0
    assert known.read_text().startswith(f"[{target.host}]:{target.port} ssh-ed25519 ")
    with SshTransport(tgt) as tr:  # now known: no trust flag needed
        assert tr.run(["true"], timeout_s=30).exit_code == 0


def test_wrong_key_is_an_auth_error(target, tmp_path):
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with pytest.raises(AuthError, match="authentication failed") as err:
        SshTransport(dataclasses.replace(target, identity_file=str(key))).open()
    secret = key.read_text()
    assert "PRIVATE KEY" not in str(err.value) and secret.splitlines()[1] not in str(err.value)


def test_closed_port_is_a_connect_error(target):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the socket goes away
    with pytest.raises(ConnectError, match="cannot connect"):
        SshTransport(dataclasses.replace(target, host="127.0.0.1", port=port)).open()


def test_changed_key_hint_names_the_bracketed_host_and_port(target, tmp_path):
    other_key = open(target.identity_file + ".pub").read().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[{target.host}]:{target.port} {other_key[0]} {other_key[1]}\n")
    with pytest.raises(HostKeyError) as err:
        SshTransport(dataclasses.replace(target, known_hosts=str(known))).open()
    assert f"ssh-keygen -R '[{target.host}]:{target.port}'" in str(err.value)


def test_trusting_a_host_appends_on_a_new_line_to_a_file_without_a_final_newline(target, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("other.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
    with SshTransport(dataclasses.replace(target, known_hosts=str(known)), trust_new_host=True) as tr:
        assert tr.run(["true"], timeout_s=30).exit_code == 0
    lines = known.read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith("other.example ")
    assert lines[1].startswith(f"[{target.host}]:{target.port} ssh-ed25519 ")


def test_known_hosts_lines_paramiko_cannot_parse_are_skipped_like_openssh(target, tmp_path):
    known = tmp_path / "known_hosts"
    good = (tmp_path / "good")
    with SshTransport(dataclasses.replace(target, known_hosts=str(good)), trust_new_host=True) as tr:
        tr.run(["true"], timeout_s=30)
    known.write_text("@cert-authority *.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnk\n"
                     "broken line ssh-ed25519 not-base64!!\n"
                     "merged.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkother ssh-rsa AAAA\n"
                     + good.read_text())
    with SshTransport(dataclasses.replace(target, known_hosts=str(known))) as tr:  # no trust flag needed
        assert tr.run(["true"], timeout_s=30).exit_code == 0
