"""The transport contract, shaped like fabric's ``Connection``.

Constructing a transport does not connect; the first ``put``/``get``/``run`` (or entering
the context manager) does. Commands are argv lists and always carry a timeout.

``put`` is content addressed and atomic: the device's sha256 of the destination is read
first and the upload is skipped when it already matches; otherwise the file is written
under a temporary name next to the destination, its sha256 is checked on the device, and
only then renamed over the destination (rename(2) is atomic on one filesystem). A failed
put leaves neither a partial destination nor the temporary file behind.

A transport also owns the target fields it reads: :meth:`Transport.validate_fields` checks
them and fills its defaults (:meth:`Transport.default_workdir`, ``default_python``) when
:mod:`edge.targets` loads an inventory, so the inventory never names a transport.
"""
from __future__ import annotations

import logging
import os
import posixpath
import uuid
from concurrent.futures import ThreadPoolExecutor
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..artifact import sha256_file
from ..errors import ConfigError, RemoteCommandError, TransportError
from ..targets import Target

UNKNOWN_SIZE = -1  # _remote_size() of a transport that cannot stat cheaply

log = logging.getLogger(__name__)

STDERR_TAIL_CHARS = 2000
SHORT_TIMEOUT_S = 60.0

# Runs "$@" under the device's `timeout` (when it has one) so a command the host gave up on
# does not keep running there. $0 = seconds.
TIMEOUT_WRAPPER = ('if command -v timeout >/dev/null 2>&1; then exec timeout -s KILL "$0" "$@"; '
                   'else exec "$@"; fi')
# Shell function: sha256 of "$1" on the device. The device's Python (hashlib uses OpenSSL,
# several times faster than coreutils sha256sum) when it has one, else sha256sum (Android).
_HASH_FN = (
    'h() { if command -v "$PY" >/dev/null 2>&1; then "$PY" -S -c "import hashlib,sys; '
    'x=hashlib.sha256(); f=open(sys.argv[1],\'rb\'); '
    '[x.update(b) for b in iter(lambda: f.read(1<<20), b\'\')]; print(x.hexdigest())" "$1"; '
    'else sha256sum "$1" | cut -d" " -f1; fi; }; '
)
# $1 = path, $2 = python. Prints the sha256, or "-" when there is no such file; creates the
# parent directory so the upload that may follow can write there.
_SHA_SCRIPT = _HASH_FN + (
    'PY=$2; mkdir -p "$(dirname "$1")" || exit 2; '
    'if [ -f "$1" ]; then h "$1"; else echo -; fi'
)
# $1 = temp path, $2 = final path, $3 = expected sha256, $4 = python. Renames only on a match.
_COMMIT_SCRIPT = _HASH_FN + (
    'PY=$4; d=$(h "$1"); '
    'if [ "$d" = "$3" ]; then mv -f "$1" "$2"; else rm -f "$1"; '
    'echo "sha256 mismatch: expected $3, device has $d" >&2; exit 3; fi'
)


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

        With ``check``, a non-zero exit raises RemoteCommandError with the stderr tail.
        """
        if not argv or not all(isinstance(a, str) for a in argv):
            raise TypeError(f"argv must be a non-empty list of str, got {argv!r}")
        self.open()
        result = self._exec(list(argv), float(timeout_s))
        log.debug("%s: %s -> %d in %.3f s", self.target.name, argv[0], result.exit_code,
                  result.duration_s)
        if check and result.exit_code != 0:
            raise RemoteCommandError(
                f"on target '{self.target.name}': `{' '.join(argv)}` exited {result.exit_code}; "
                f"stderr: {tail(result.stderr.strip()) or '(empty)'}"
            )
        return result

    def remote_sha256(self, remote_path: str) -> str | None:
        """sha256 of a file on the device, None when it does not exist."""
        out = self.run(["sh", "-c", _SHA_SCRIPT, "sh", remote_path, self.target.python],
                       timeout_s=SHORT_TIMEOUT_S).stdout.strip()
        return None if out == "-" else out

    def put(self, local_path: str | Path, remote_path: str, timeout_s: float = 3600.0) -> PutResult:
        """Copy a local file to the device unless it already holds the same bytes.

        A remote file of another size (or none) is known to differ without hashing it
        there; the local hash then runs while the bytes are on the wire.
        """
        local = Path(local_path)
        if not local.is_file():
            raise TransportError(f"cannot put {local}: no such local file")
        size = local.stat().st_size
        self.open()
        with ThreadPoolExecutor(max_workers=1) as pool:  # hash locally while the device works
            local_sha = pool.submit(sha256_file, local)
            remote_size = self._remote_size(remote_path)
            if remote_size in (size, UNKNOWN_SIZE) and self.remote_sha256(remote_path) == local_sha.result():
                log.debug("%s: %s unchanged, skipped", self.target.name, remote_path)
                return PutResult(skipped=True, bytes_sent=0, sha256=local_sha.result(),
                                 remote_path=remote_path)
            if remote_size is None:
                self._make_parent(remote_path)
            tmp = f"{remote_path}.tmp-{uuid.uuid4().hex[:12]}"
            try:
                self._upload(local, tmp, timeout_s)
                sha = local_sha.result()
                self.run(["sh", "-c", _COMMIT_SCRIPT, "sh", tmp, remote_path, sha, self.target.python],
                         timeout_s=SHORT_TIMEOUT_S + size / 20e6)
            except BaseException:
                self._remove_quietly(tmp)
                raise
        log.info("%s: pushed %s (%d bytes)", self.target.name, remote_path, size)
        return PutResult(skipped=False, bytes_sent=size, sha256=sha, remote_path=remote_path)

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

    def _make_parent(self, remote_path: str) -> None:
        """Create the parent directory of ``remote_path`` on the device."""
        self.run(["mkdir", "-p", posixpath.dirname(remote_path) or "."], timeout_s=SHORT_TIMEOUT_S)

    @abstractmethod
    def _connect(self) -> None: ...

    @abstractmethod
    def _disconnect(self) -> None: ...

    @abstractmethod
    def _exec(self, argv: list[str], timeout_s: float) -> RunResult: ...

    @abstractmethod
    def _upload(self, local: Path, remote_path: str, timeout_s: float) -> None: ...

    @abstractmethod
    def _download(self, remote_path: str, local: Path, timeout_s: float) -> None: ...
