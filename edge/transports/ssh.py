"""SSH transport (paramiko): exec for commands, SFTP for files.

Host keys are checked against the target's ``known_hosts``; unknown hosts are refused
unless ``trust_new_host`` is set, in which case the key is recorded there. Authentication
uses the target's ``identity_file`` (or ``~/.ssh/config``'s IdentityFile, or the default
key files) and ssh-agent. Key material and passwords never reach logs or messages.
"""
from __future__ import annotations

import fcntl
import logging
import os
import posixpath
import select
import shlex
import socket
import time
from pathlib import Path
from typing import Any

import paramiko

from ..errors import AuthError, CommandTimeoutError, ConnectError, HostKeyError, TransportError
from ..targets import resolve_ssh
from .base import (SHORT_TIMEOUT_S, TIMEOUT_WRAPPER, UNKNOWN_SIZE, RunResult, Transport,
                   invalid_field)

log = logging.getLogger(__name__)
# paramiko logs every connection and SFTP session at INFO; keep edge's output readable
logging.getLogger("paramiko").setLevel(logging.WARNING)

CONNECT_TIMEOUT_S = 15.0
# Our receive window and packet size (downloads); uploads are bounded by the server's.
WINDOW_BYTES = 64 * 1024 * 1024
MAX_PACKET_BYTES = 256 * 1024
# One SFTP write per SSH packet: OpenSSH advertises 32 KiB packets on session channels.
SFTP_CHUNK_BYTES = 32 * 1024 - 128
# AES-GCM needs one AEAD call per packet instead of cipher + HMAC.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")


def _make_transport(sock, **kwargs) -> paramiko.Transport:
    t = paramiko.Transport(sock, default_window_size=WINDOW_BYTES,
                           default_max_packet_size=MAX_PACKET_BYTES, **kwargs)
    opts = t.get_security_options()
    available = set(opts.ciphers)
    opts.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in available) + tuple(
        c for c in opts.ciphers if c not in PREFERRED_CIPHERS)
    return t


def known_hosts_name(host: str, port: int) -> str:
    """How OpenSSH names a host in known_hosts: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


def append_known_host(path: Path, line: str) -> None:
    """Append one known_hosts line under a lock, starting a new line if the file lacks a final newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # two edge processes trusting hosts at once must not interleave
        f.seek(0, os.SEEK_END)
        size = f.tell()
        last = ""
        if size:
            f.seek(size - 1)
            last = f.read(1)
        f.write(("\n" if size and last != "\n" else "") + line + "\n")


def load_known_hosts(client: paramiko.SSHClient, path: Path) -> int:
    """Load the lines paramiko understands; skip the rest as OpenSSH skips what it cannot parse.

    Markers (``@cert-authority``, ``@revoked``) and broken lines are skipped (and counted)
    instead of failing the connection; returns how many lines were skipped.
    """
    keys, skipped = client.get_host_keys(), 0
    for lineno, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entry = None if line.startswith("@") else paramiko.hostkeys.HostKeyEntry.from_line(line, lineno)
        except Exception:  # noqa: BLE001 - any malformed line: OpenSSH ignores it too
            entry = None
        if entry is None:
            skipped += 1
            continue
        for name in entry.hostnames:
            keys.add(name, entry.key.get_name(), entry.key)
    if skipped:
        log.info("%s: skipped %d line(s) paramiko cannot use (markers such as @cert-authority, or broken "
                 "lines)", path, skipped)
    return skipped


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse unknown hosts, or record them when the user asked to trust new hosts."""

    def __init__(self, known_hosts: Path, trust: bool, target_name: str):
        self.known_hosts, self.trust, self.target_name = known_hosts, trust, target_name

    def missing_host_key(self, client, hostname, key):
        fingerprint = key.fingerprint
        if not self.trust:
            raise HostKeyError(
                f"target '{self.target_name}': host {hostname} is not in {self.known_hosts} "
                f"({key.get_name()} {fingerprint}). Check the fingerprint on the device "
                f"(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then re-run with "
                f"--trust-new-host to record it, or add it with `ssh-keyscan`"
            )
        append_known_host(self.known_hosts, f"{hostname} {key.get_name()} {key.get_base64()}")
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning("target '%s': trusted new host key %s %s for %s (recorded in %s)",
                    self.target_name, key.get_name(), fingerprint, hostname, self.known_hosts)


class SshTransport(Transport):
    """A device reached over SSH."""

    name = "ssh"

    @classmethod
    def default_workdir(cls, fields: dict[str, Any]) -> str:
        """``edge``: a relative path, so under the login directory."""
        return "edge"

    @classmethod
    def validate_fields(cls, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        """An ssh target needs a ``host`` (an address or a ``~/.ssh/config`` alias)."""
        if not fields.get("host"):
            raise invalid_field(name, "host", fields.get("host"), "a host for transport ssh")
        return super().validate_fields(name, fields)

    def __init__(self, target, trust_new_host: bool = False):
        super().__init__(target, trust_new_host)
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def _where(self) -> str:
        t = self.resolved
        return f"target '{t.name}' ({t.user}@{t.host}:{t.port})"

    def _connect(self) -> None:
        self.resolved = t = resolve_ssh(self.target)
        known_hosts = Path(t.known_hosts)
        client = paramiko.SSHClient()
        if known_hosts.is_file():
            load_known_hosts(client, known_hosts)
        client.set_missing_host_key_policy(_HostKeyPolicy(known_hosts, self.trust_new_host, t.name))
        try:
            sock = socket.create_connection((t.host, t.port), timeout=CONNECT_TIMEOUT_S)
            # many small request/response round trips: Nagle + delayed ACK would add 40 ms each
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.connect(
                t.host, port=t.port, sock=sock, username=t.user, key_filename=t.identity_file,
                look_for_keys=t.identity_file is None, allow_agent=True, timeout=CONNECT_TIMEOUT_S,
                banner_timeout=CONNECT_TIMEOUT_S, auth_timeout=CONNECT_TIMEOUT_S,
                transport_factory=_make_transport)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"{self._where()}: the host key has CHANGED: {known_hosts} holds "
                f"{exc.expected_key.get_name()} {exc.expected_key.fingerprint}, the device offered "
                f"{exc.key.get_name()} {exc.key.fingerprint}. This may be a reinstalled device or an "
                f"attack; if the change is expected, remove the old line (ssh-keygen -R "
                f"'{known_hosts_name(t.host, t.port)}' -f {known_hosts}) and connect with --trust-new-host"
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise AuthError(
                f"{self._where()}: authentication failed ({type(exc).__name__}); expected the key "
                f"{t.identity_file or '(default keys / ssh-agent)'} to be in the device's "
                f"authorized_keys for user {t.user}"
            ) from None
        except (paramiko.ssh_exception.NoValidConnectionsError, ConnectionError, socket.timeout,
                socket.gaierror, paramiko.SSHException, OSError) as exc:
            client.close()
            raise ConnectError(
                f"{self._where()}: cannot connect: {exc}. Check that the device is on, sshd runs "
                "and the host/port in the target are right"
            ) from None
        except BaseException:
            client.close()
            raise
        self._client = client

    def _disconnect(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _exec(self, argv: list[str], timeout_s: float) -> RunResult:
        start = time.perf_counter()
        command = shlex.join(["sh", "-c", TIMEOUT_WRAPPER, str(int(timeout_s) + 2), *argv])
        try:
            chan = self._client.get_transport().open_session(timeout=CONNECT_TIMEOUT_S)
            chan.exec_command(command)
            chan.shutdown_write()
            out, err = self._drain(chan, start + timeout_s)
        except (paramiko.SSHException, OSError) as exc:
            raise ConnectError(f"{self._where()}: connection lost running `{argv[0]}`: {exc}") from None
        if out is None:
            chan.close()
            raise CommandTimeoutError(
                f"{self._where()}: `{shlex.join(argv)}` still running after {timeout_s:g} s; it "
                "was stopped. Raise the timeout or check the device"
            )
        code = chan.recv_exit_status()
        chan.close()
        return RunResult(argv=argv, exit_code=code, stdout=out.decode(errors="replace"),
                         stderr=err.decode(errors="replace"), duration_s=time.perf_counter() - start)

    @staticmethod
    def _drain(chan: paramiko.Channel, deadline: float) -> tuple[bytes | None, bytes]:
        """Read stdout and stderr until the command exits; (None, stderr) at the deadline."""
        out, err = bytearray(), bytearray()
        while True:
            progressed = False
            while chan.recv_ready():
                out += chan.recv(1 << 16)
                progressed = True
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(1 << 16)
                progressed = True
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                # exit status may precede the last data; closed means all data arrived
                if chan.closed or chan.eof_received:
                    return bytes(out), bytes(err)
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None, bytes(err)
            if not progressed:
                select.select([chan], [], [], min(remaining, 0.02))

    def _sftp_client(self, timeout_s: float) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self._client.open_sftp()
        self._sftp.get_channel().settimeout(max(timeout_s, 1.0))
        return self._sftp

    def _remote_size(self, remote_path: str) -> int | None:
        # An SFTP stat is one round trip on an open channel; an exec costs a new channel.
        try:
            return self._sftp_client(SHORT_TIMEOUT_S).stat(remote_path).st_size
        except FileNotFoundError:
            return None
        except (OSError, paramiko.SSHException):
            return UNKNOWN_SIZE

    def _make_parent(self, remote_path: str) -> None:
        parent = posixpath.dirname(remote_path) or "."
        try:
            self._sftp_client(SHORT_TIMEOUT_S).stat(parent)
        except (OSError, paramiko.SSHException):  # absent (or unknown): one exec creates it
            super()._make_parent(remote_path)

    def _upload(self, local: Path, remote_path: str, timeout_s: float) -> None:
        try:
            sftp = self._sftp_client(timeout_s)
            with open(local, "rb") as src, sftp.open(remote_path, "wb") as dst:
                dst.set_pipelined(True)
                while block := src.read(SFTP_CHUNK_BYTES):
                    dst.write(block)
        except socket.timeout:
            raise CommandTimeoutError(f"{self._where()}: upload of {local} stalled for "
                                      f"{timeout_s:g} s") from None
        except (OSError, paramiko.SSHException) as exc:
            raise TransportError(f"{self._where()}: upload of {local} to {remote_path} failed: "
                                 f"{exc}") from None

    def _download(self, remote_path: str, local: Path, timeout_s: float) -> None:
        try:
            self._sftp_client(timeout_s).get(remote_path, str(local))
        except socket.timeout:
            raise CommandTimeoutError(f"{self._where()}: download of {remote_path} stalled for "
                                      f"{timeout_s:g} s") from None
        except (OSError, paramiko.SSHException) as exc:
            raise TransportError(f"{self._where()}: download of {remote_path} failed: {exc}") from None
