"""The transport contract, shaped like fabric's ``Connection``.

Constructing a transport does not connect; the first ``put``/``get``/``run`` (or entering
the context manager) does. Commands are argv lists and always carry a timeout.

``put`` is content addressed and atomic: the device's sha256 of the destination is read
first and the upload is skipped when it already matches; otherwise the file is written
under a partial name next to the destination (``NAME.part-KEY``, KEY from the local path,
size and mtime), its sha256 is checked on the device, and only then renamed over the
destination (rename(2) is atomic on one filesystem): the destination holds the old verified
file or the new one, never a mix. A put cut off by a lost link or a stall keeps its partial
file, and the next put of the same file resumes from where it stopped; any other failure
removes it, and a commit removes partial files of that destination untouched for 10
minutes. Free space is checked before uploading (:class:`DeviceFullError` names both sizes).

A transport also owns the target fields it reads: :meth:`Transport.validate_fields` checks
them and fills its defaults (:meth:`Transport.default_workdir`, ``default_python``) when
:mod:`edge.targets` loads an inventory, so the inventory never names a transport.
"""
from __future__ import annotations

import hashlib
import logging
import os
import posixpath
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..artifact import sha256_file
from ..errors import (CommandTimeoutError, ConfigError, ConnectError, DeviceFullError,
                      OutOfMemoryError, RemoteCommandError, TransportError)
from ..targets import Target
from .device_shell import (COMMIT_SCRIPT, FREE_SCRIPT, HASH_TOOLS, SHA_SCRIPT,
                           TIMEOUT_WRAPPER, Killed, parse_free, parse_sha, split_killed)

__all__ = ["PutResult", "RunResult", "Transport", "TIMEOUT_WRAPPER", "UNKNOWN_SIZE"]

UNKNOWN_SIZE = -1  # _remote_size() of a transport that cannot stat cheaply

log = logging.getLogger(__name__)

STDERR_TAIL_CHARS = 2000
SHORT_TIMEOUT_S = 60.0

@dataclass(frozen=True)
class PutResult:
    """Outcome of one put: skipped when the device already held the same bytes."""

    skipped: bool
    bytes_sent: int
    sha256: str
    remote_path: str = ""


@dataclass(frozen=True)
class RunResult:
    """Outcome of one command on the device (stdout/stderr decoded as UTF-8)."""

    argv: list[str]
    exit_code: int
    stdout: str
    stderr: str
    duration_s: float
    killed: Killed | None = None  # the command died of a signal (OOM kill, timeout, kill -9)


def _partial_key(local: Path, size: int) -> str:
    """Names a partial upload after what is being sent: the same file resumes, another does not."""
    st = local.stat()
    return hashlib.sha256(f"{local.resolve()}\0{size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]


def shown(argv: list[str], limit: int = 120) -> str:
    """argv for a message: a long argument (a shell script) is shortened."""
    return " ".join(a if len(a) <= limit else a[:40] + f"...({len(a)} chars)" for a in argv)


def tail(text: str, chars: int = STDERR_TAIL_CHARS) -> str:
    """The last ``chars`` characters of ``text`` (for error messages)."""
    return text if len(text) <= chars else "..." + text[-chars:]


def invalid_field(target_name: str, field: str, value: Any, expected: str) -> ConfigError:
    """The ConfigError for one bad target field; :mod:`edge.targets` prefixes the file."""
    return ConfigError(f"target '{target_name}': field '{field}' = {value!r} is invalid; "
                       f"expected {expected}")


class Transport(ABC):
    """Base of every transport. Subclasses implement the ``_``-methods and
    :meth:`default_workdir`, and extend :meth:`validate_fields` with the fields they need."""

    name = "base"
    default_python = "python3"  # the device's interpreter when the target names none

    # -- target fields (read by edge.targets, before any connection) --------------------
    @classmethod
    @abstractmethod
    def default_workdir(cls, fields: dict[str, Any]) -> str:
        """The working directory on the device when the target sets no ``workdir``."""

    @classmethod
    def validate_fields(cls, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Target ``name``'s fields checked for this transport, with its defaults filled in.

        ``fields`` are the target's YAML fields, already type-checked by :mod:`edge.targets`.
        A field this transport needs but lacks raises ConfigError (see :func:`invalid_field`).
        """
        values = dict(fields)
        if "workdir" not in values:  # computed only when needed: local's creates a directory
            values["workdir"] = cls.default_workdir(values)
        values.setdefault("python", cls.default_python)
        return values

    def __init__(self, target: Target, trust_new_host: bool = False):
        self.target = target
        self.trust_new_host = trust_new_host
        self._open = False

    # -- lifecycle --------------------------------------------------------------------
    def open(self) -> None:
        """Connect (idempotent)."""
        if not self._open:
            self._connect()
            self._open = True

    def close(self) -> None:
        """Disconnect (idempotent)."""
        if self._open:
            self._open = False
            self._disconnect()

    def __enter__(self) -> "Transport":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- public API -------------------------------------------------------------------
    def run(self, argv: list[str], timeout_s: float, check: bool = True) -> RunResult:
        """Run ``argv`` on the device; CommandTimeoutError past ``timeout_s``.

        With ``check``, a non-zero exit raises RemoteCommandError with the stderr tail. A
        command the device's out-of-memory killer stopped raises OutOfMemoryError either way.
        """
        if not argv or not all(isinstance(a, str) for a in argv):
            raise TypeError(f"argv must be a non-empty list of str, got {argv!r}")
        self.open()
        result = self._exec(list(argv), float(timeout_s))
        stderr, killed = split_killed(result.stderr)
        if killed is not None:
            result = replace(result, stderr=stderr, killed=killed)
        killed = result.killed
        log.debug("%s: %s -> %d in %.3f s", self.target.name, argv[0], result.exit_code,
                  result.duration_s)
        if killed is not None and killed.oom_killed:
            raise OutOfMemoryError(
                f"on target '{self.target.name}': `{argv[0]}` was {killed.describe()}. Use a "
                "smaller model or plan (edge plan with this device's profile), or free memory on "
                f"the device; stderr: {tail(stderr.strip()) or '(empty)'}")
        if check and result.exit_code != 0:
            how = killed.describe() if killed else f"exited {result.exit_code}"
            raise RemoteCommandError(
                f"on target '{self.target.name}': `{shown(argv)}` {how}; "
                f"stderr: {tail(stderr.strip()) or '(empty)'}"
            )
        return result

    def remote_sha256(self, remote_path: str) -> str | None:
        """sha256 of a file on the device, None when it does not exist."""
        res = self.run(["sh", "-c", SHA_SCRIPT, "sh", remote_path, self.target.python],
                       timeout_s=SHORT_TIMEOUT_S, check=False)
        sha, tool = parse_sha(res.stdout)
        if res.exit_code not in (0, 4):
            raise RemoteCommandError(f"on target '{self.target.name}': hashing {remote_path} "
                                     f"exited {res.exit_code}; stderr: "
                                     f"{tail(res.stderr.strip()) or '(empty)'}")
        if sha == "":
            raise TransportError(
                f"target '{self.target.name}': no sha256 tool works on the device (tried "
                f"{', '.join(HASH_TOOLS)}; python is {self.target.python!r}); install coreutils "
                "or busybox, or set the target's python to an interpreter the device has")
        if tool and tool != getattr(self, "hash_tool", None):
            self.hash_tool = tool
            log.info("%s: hashing files with %s", self.target.name, tool)
        return sha

    def free_bytes(self, remote_dir: str) -> int | None:
        """Create ``remote_dir`` on the device and return its free bytes (None: unknown)."""
        return parse_free(self.run(["sh", "-c", FREE_SCRIPT, "sh", remote_dir],
                                   timeout_s=SHORT_TIMEOUT_S).stdout)

    def put(self, local_path: str | Path, remote_path: str,
            timeout_s: float | None = None) -> PutResult:
        """Copy a local file to the device unless it already holds the same bytes.

        ``timeout_s`` bounds how long the transfer may make no progress (default: the
        target's ``stall_timeout_s``). A remote file of another size (or none) is known to
        differ without hashing it there; the local hash then runs while the bytes are on the
        wire. A partial upload of this file left by a lost link is resumed.
        """
        local = Path(local_path)
        if not local.is_file():
            raise TransportError(f"cannot put {local}: no such local file")
        stall_s = float(timeout_s or self.target.stall_timeout_s)
        size = local.stat().st_size
        self.open()
        with ThreadPoolExecutor(max_workers=1) as pool:  # hash locally while the device works
            local_sha = pool.submit(sha256_file, local)
            remote_size = self._remote_size(remote_path)
            if remote_size in (size, UNKNOWN_SIZE) and self.remote_sha256(remote_path) == local_sha.result():
                log.debug("%s: %s unchanged, skipped", self.target.name, remote_path)
                return PutResult(skipped=True, bytes_sent=0, sha256=local_sha.result(),
                                 remote_path=remote_path)
            partial = f"{remote_path}.part-{_partial_key(local, size)}"
            sent = 0
            for attempt in (1, 2):  # a resumed upload that does not verify restarts once
                done = self._remote_size(partial) if attempt == 1 else None
                offset = done if isinstance(done, int) and 0 < done <= size else 0
                self._check_space(remote_path, size - offset)
                sent += self._upload_partial(local, partial, stall_s, offset)
                sha = local_sha.result()
                try:
                    self.run(["sh", "-c", COMMIT_SCRIPT, "sh", partial, remote_path, sha,
                              self.target.python], timeout_s=SHORT_TIMEOUT_S + size / 20e6)
                    break
                except RemoteCommandError as exc:
                    self._remove_quietly(partial)
                    if attempt == 2 or offset == 0 or "sha256 mismatch" not in str(exc):
                        raise
                    log.warning("%s: resumed upload of %s did not verify; uploading it whole",
                                self.target.name, remote_path)
        log.info("%s: pushed %s (%d bytes%s)", self.target.name, remote_path, sent,
                 f" of {size}, resumed" if sent < size else "")
        return PutResult(skipped=False, bytes_sent=sent, sha256=sha, remote_path=remote_path)

    def _check_space(self, remote_path: str, needed: int) -> None:
        directory = posixpath.dirname(remote_path) or "."
        free = self.free_bytes(directory)
        if free is not None and free < needed:
            raise DeviceFullError(
                f"target '{self.target.name}': not enough space in {directory} on the device for "
                f"{posixpath.basename(remote_path)}: it needs {needed / 1e6:.1f} MB, "
                f"{free / 1e6:.1f} MB are free. Free space there (earlier artifacts live under "
                f"{self.target.workdir}) or set the target's workdir to a larger filesystem")

    def _upload_partial(self, local: Path, partial: str, stall_s: float, offset: int) -> int:
        """Upload ``local`` from ``offset`` into ``partial``; returns the bytes sent.

        A lost link or a stall keeps the partial file (the next put resumes it); any other
        failure removes it, and a device out of space says so.
        """
        if offset:
            log.info("%s: resuming %s at %d bytes", self.target.name, partial, offset)
        try:
            self._upload(local, partial, stall_s, offset)
        except (ConnectError, CommandTimeoutError, KeyboardInterrupt):
            raise  # resumable: the partial file stays for the next put
        except Exception as exc:
            try:  # while the partial file still holds the space it took: did the disk fill up?
                if self._open:
                    self._check_space(partial, local.stat().st_size - offset)
            except DeviceFullError as full:
                raise full from exc
            except TransportError:
                pass  # the upload's own error says more
            finally:
                self._remove_quietly(partial)
            raise
        return local.stat().st_size - offset

    def get(self, remote_path: str, local_path: str | Path, timeout_s: float = 3600.0) -> Path:
        """Copy a file from the device; written to a temp name, then renamed."""
        local = Path(local_path)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.tmp-{os.getpid()}")
        self.open()
        try:
            self._download(remote_path, tmp, timeout_s)
            tmp.replace(local)
        finally:
            tmp.unlink(missing_ok=True)
        return local

    def _remove_quietly(self, remote_path: str) -> None:
        try:
            if self._open:
                self.run(["rm", "-f", remote_path], timeout_s=SHORT_TIMEOUT_S, check=False)
        except TransportError as exc:  # the original failure matters more; say why cleanup failed
            log.warning("%s: could not remove %s: %s", self.target.name, remote_path, exc)

    # -- subclass hooks ----------------------------------------------------------------
    def _remote_size(self, remote_path: str) -> int | None:
        """Size of a file on the device, None when absent, UNKNOWN_SIZE without a cheap stat."""
        return UNKNOWN_SIZE

    @abstractmethod
    def _connect(self) -> None: ...

    @abstractmethod
    def _disconnect(self) -> None: ...

    @abstractmethod
    def _exec(self, argv: list[str], timeout_s: float) -> RunResult: ...

    @abstractmethod
    def _upload(self, local: Path, remote_path: str, timeout_s: float, offset: int = 0) -> None:
        """Write ``local`` from byte ``offset`` into ``remote_path`` at the same offset,
        creating it without truncating what is there; ``timeout_s`` bounds a stall."""

    @abstractmethod
    def _download(self, remote_path: str, local: Path, timeout_s: float) -> None: ...
