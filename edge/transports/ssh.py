"""SSH transport (paramiko): exec for commands, SFTP for files.

Host keys are checked against the target's ``known_hosts``; unknown hosts are refused
unless ``trust_new_host`` is set, in which case the key is recorded there. Authentication
uses the target's ``identity_file`` (or ``~/.ssh/config``'s IdentityFile, or the default
key files) and ssh-agent. Key material and passwords never reach logs or messages.
"""
from __future__ import annotations

import errno
import logging
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
from .ssh_keys import (_HostKeyPolicy, check_identity, known_hosts_name, load_known_hosts,
                       passphrase_message)

log = logging.getLogger(__name__)
# paramiko logs every session at INFO and a lost link at ERROR; edge says what happened itself
logging.getLogger("paramiko").setLevel(logging.CRITICAL)

CONNECT_TIMEOUT_S = 15.0
MAX_BACKOFF_S = 30.0
# socket errors that mean the link, not the device's filesystem, failed
_LINK_ERRNOS = {errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT,
                errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}
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


class _Transient(Exception):
    """A connection attempt that may succeed later (refused, reset, no answer yet)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _tune_socket(sock: socket.socket, stall_s: float) -> None:
    """No Nagle; a link that acknowledges nothing for ``stall_s`` fails instead of hanging."""
    # many small request/response round trips: Nagle + delayed ACK would add 40 ms each
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux: unacknowledged data times out the link
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(stall_s * 1000))


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
        key_filename = check_identity(t)
        attempts = int(self.target.connect_retries) + 1
        for attempt in range(1, attempts + 1):
            try:
                self._client = self._connect_once(t, key_filename)
                break
            except _Transient as exc:
                if attempt == attempts:
                    raise ConnectError(
                        f"{self._where()}: cannot connect ({attempts} attempt"
                        f"{'s' if attempts > 1 else ''}): {exc.reason}. Check that the device is on, "
                        "sshd runs and the host/port in the target are right (connect_retries and "
                        "connect_backoff_s in the target set how long edge keeps trying)") from None
                wait = min(self.target.connect_backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
                log.info("%s: connection attempt %d of %d failed (%s); retrying in %.1f s",
                         self.target.name, attempt, attempts, exc.reason, wait)
                time.sleep(wait)
        stall_s = self.target.stall_timeout_s
        self._client.get_transport().set_keepalive(max(1, int(stall_s / 3)))

    def _connect_once(self, t, key_filename: str | None) -> paramiko.SSHClient:
        known_hosts = Path(t.known_hosts)
        client = paramiko.SSHClient()
        if known_hosts.is_file():
            load_known_hosts(client, known_hosts)
        client.set_missing_host_key_policy(_HostKeyPolicy(known_hosts, self.trust_new_host, t.name))
        try:
            sock = socket.create_connection((t.host, t.port), timeout=CONNECT_TIMEOUT_S)
            _tune_socket(sock, self.target.stall_timeout_s)
            client.connect(
                t.host, port=t.port, sock=sock, username=t.user, key_filename=key_filename,
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
        except paramiko.PasswordRequiredException:
            client.close()
            raise AuthError(passphrase_message(self._where(), t.identity_file)) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise AuthError(
                f"{self._where()}: authentication failed ({type(exc).__name__}); expected the key "
                f"{t.identity_file or '(default keys / ssh-agent)'} to be in the device's "
                f"authorized_keys for user {t.user}"
            ) from None
        except (paramiko.ssh_exception.NoValidConnectionsError, ConnectionError, socket.timeout,
                socket.gaierror, paramiko.SSHException, EOFError, OSError) as exc:
            client.close()
            raise _Transient(str(exc) or type(exc).__name__) from None
        except BaseException:
            client.close()
            raise
        return client

    def _disconnect(self) -> None:
        sftp, client, self._sftp, self._client = self._sftp, self._client, None, None
        for closable in (sftp, client):
            if closable is not None:
                try:
                    closable.close()
                except (OSError, EOFError, paramiko.SSHException) as exc:  # a dead link: nothing to say goodbye to
                    log.debug("%s: closing a lost connection: %r", self.target.name, exc)

    def _exec(self, argv: list[str], timeout_s: float) -> RunResult:
        start = time.perf_counter()
        command = shlex.join(["sh", "-c", TIMEOUT_WRAPPER, str(int(timeout_s) + 2), *argv])
        try:
            chan = self._client.get_transport().open_session(timeout=CONNECT_TIMEOUT_S)
            chan.exec_command(command)
            chan.shutdown_write()
            out, err = self._drain(chan, start + timeout_s)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectError(f"{self._where()}: connection lost running `{argv[0]}`: "
                               f"{exc or type(exc).__name__}") from None
        if out is None:
            chan.close()
            raise CommandTimeoutError(
                f"{self._where()}: `{shlex.join(argv)}` still running after {timeout_s:g} s; it "
                "was stopped. Raise the timeout or check the device"
            )
        code = chan.recv_exit_status()
        chan.close()
        if code == -1 and not self._alive():
            raise ConnectError(
                f"{self._where()}: connection lost while `{shlex.join(argv)[:200]}` ran "
                f"(after {time.perf_counter() - start:.1f} s, no exit status); the device may have "
                "rebooted or dropped off the network. Check it (edge targets check) and run again")
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
        except (OSError, paramiko.SSHException, EOFError):
            return UNKNOWN_SIZE

    def _upload(self, local: Path, remote_path: str, timeout_s: float, offset: int = 0) -> None:
        try:
            sftp = self._sftp_client(timeout_s)
            try:  # create without truncating: a concurrent put of the same file may be writing
                dst = sftp.open(remote_path, "wxb")  # O_EXCL: a new file
            except OSError:
                dst = sftp.open(remote_path, "r+b")
            with open(local, "rb") as src, dst:
                dst.set_pipelined(True)
                src.seek(offset)
                dst.seek(offset)
                while block := src.read(SFTP_CHUNK_BYTES):
                    dst.write(block)
        except socket.timeout:
            raise CommandTimeoutError(
                f"{self._where()}: upload of {local} made no progress for {timeout_s:g} s (the "
                "target's stall_timeout_s); the part already sent stays on the device and the "
                "next push resumes it") from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            if self._lost(exc):
                raise ConnectError(
                    f"{self._where()}: connection lost during the upload of {local}: "
                    f"{exc or type(exc).__name__}; the part already sent stays on the device and "
                    "the next push resumes it") from None
            raise TransportError(f"{self._where()}: upload of {local} to {remote_path} failed: "
                                 f"{exc}") from None

    def _lost(self, exc: BaseException) -> bool:
        """Whether a failed transfer means the link is gone (not an SFTP error from the device)."""
        if isinstance(exc, (EOFError, paramiko.SSHException)) or not self._alive():
            return True
        return isinstance(exc, OSError) and exc.errno in _LINK_ERRNOS

    def _alive(self) -> bool:
        transport = self._client.get_transport() if self._client is not None else None
        return transport is not None and transport.is_active()

    def _download(self, remote_path: str, local: Path, timeout_s: float) -> None:
        try:
            self._sftp_client(timeout_s).get(remote_path, str(local))
        except socket.timeout:
            raise CommandTimeoutError(f"{self._where()}: download of {remote_path} stalled for "
                                      f"{timeout_s:g} s") from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            if self._lost(exc):
                raise ConnectError(f"{self._where()}: connection lost during the download of "
                                   f"{remote_path}: {exc or type(exc).__name__}") from None
            raise TransportError(f"{self._where()}: download of {remote_path} failed: {exc}") from None
