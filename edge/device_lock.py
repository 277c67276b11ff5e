"""A lock on the device: one bench at a time per device working directory.

Two benches on one device spoil each other's latencies, and the hosts that start them need
not be the same machine, so the lock lives on the device: the directory
``<workdir>/.edge-bench.lock``, made with mkdir(1), which is atomic on every POSIX file
system and which toybox (Android), busybox and coreutils all have (flock(1) is missing on
many Android builds). Its ``owner`` file (written beside, then renamed into the directory, so
it is read whole or not at all) names the holder: token, host, boot id, pid, user, the
device's clock when it was taken (``since``, epoch seconds) and how long the holder may
keep it (``hold_s``: the bench timeout plus a margin).

A lock is stale, and is broken, when the device's clock is past ``since + hold_s``, when its
holder ran on this very host (same host name and boot id) and its pid is gone, or when it
has had no owner file for :data:`ORPHAN_AFTER_S` (its maker died between mkdir and writing
it). Breaking and releasing first make ``<lock>/breaking`` (mkdir again: one breaker per lock
instance) and remove the lock only when its token is still the one judged stale (or one's
own), so a lock taken meanwhile by someone else is never removed.

Every script runs as ``sh -c SCRIPT sh ARGS...``: paths and names are arguments, never text
in the script.
"""
from __future__ import annotations

import datetime
import getpass
import logging
import math
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, DeviceBusyError, TransportError
from .transports.base import SHORT_TIMEOUT_S, Transport, tail

log = logging.getLogger(__name__)

LOCK_NAME = ".edge-bench.lock"
DEFAULT_DEVICE_WAIT_S = 600.0  # how long a bench waits for a busy device before DeviceBusyError
HOLD_MARGIN_S = 120.0  # beyond the bench timeout: device context, a slow exit, clock steps
ORPHAN_AFTER_S = 60.0  # a lock with no owner file, or a stale one nobody manages to break, this long (host clock)
POLL_FIRST_S, POLL_MAX_S = 0.1, 5.0  # waiting polls back off from the first to the largest interval

# $1 = lock dir, $2..$7 = token host boot pid hold_s user. Prints "acquired", or "busy <device
# epoch>" and the holder's owner file (nothing when it has none yet).
_ACQUIRE = (
    'now=$(date +%s); mkdir -p "$(dirname "$1")" || exit 2; i=0; '
    'while [ "$i" -lt 3 ]; do '
    'if mkdir "$1" 2>/dev/null; then '
    'if printf "token=%s\\nhost=%s\\nboot=%s\\npid=%s\\nsince=%s\\nhold_s=%s\\nuser=%s\\n" '
    '"$2" "$3" "$4" "$5" "$now" "$6" "$7" > "$1/owner.tmp" && mv -f "$1/owner.tmp" "$1/owner"; '
    'then echo acquired; exit 0; fi; rm -rf "$1"; exit 2; fi; '
    'if [ -d "$1" ]; then echo "busy $now"; cat "$1/owner" 2>/dev/null; exit 0; fi; '
    'i=$((i + 1)); done; mkdir "$1"; exit 2'
)
# $1 = lock dir, $2 = the token to remove ("" = a lock with no owner file), $3 = 1 to clear a
# breaker that died first. Prints "removed" when it removed the lock.
_REMOVE = (
    'if [ "$3" = 1 ]; then rm -rf "$1/breaking"; fi; '
    'mkdir "$1/breaking" 2>/dev/null || exit 0; '
    't=; if [ -f "$1/owner" ]; then read -r t < "$1/owner"; fi; want=; '
    'if [ -n "$2" ]; then want="token=$2"; fi; '
    'if [ "$t" = "$want" ]; then rm -rf "$1" && echo removed; else rmdir "$1/breaking"; fi'
)
_SAFE = re.compile(r"[^A-Za-z0-9._@:-]")


@dataclass(frozen=True)
class LockOwner:
    """Who holds a device lock, as its owner file says (``since`` in device epoch seconds)."""

    token: str
    host: str = "?"
    boot: str = ""
    pid: int = 0
    since: int = 0
    hold_s: float = 0.0
    user: str = "?"

    @classmethod
    def parse(cls, lines: list[str]) -> "LockOwner | None":
        fields = dict(line.split("=", 1) for line in lines if "=" in line)
        if not fields.get("token"):
            return None
        try:
            return cls(token=fields["token"], host=fields.get("host", "?"), boot=fields.get("boot", ""),
                       pid=int(fields.get("pid", 0)), since=int(fields.get("since", 0)),
                       hold_s=float(fields.get("hold_s", 0)), user=fields.get("user", "?"))
        except ValueError:  # a damaged owner file: judged like one with no owner
            return None

    def describe(self, device_now: int) -> str:
        when = datetime.datetime.fromtimestamp(self.since, datetime.timezone.utc).isoformat(timespec="seconds")
        return (f"host {self.host}, pid {self.pid}, user {self.user}, since {when} "
                f"({max(device_now - self.since, 0)} s ago by the device's clock)")


def _clean(text: str) -> str:
    return _SAFE.sub("_", text)[:100] or "?"


def _boot_id() -> str:
    try:
        return _clean(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return pid > 0


def check_wait(device_wait_s: float) -> float:
    """``device_wait_s`` as a float >= 0, or a ConfigError."""
    if isinstance(device_wait_s, bool) or not isinstance(device_wait_s, (int, float)) \
            or not math.isfinite(device_wait_s) or device_wait_s < 0:
        raise ConfigError(f"expected a device wait in seconds >= 0 and finite (0 = refuse a busy device), "
                          f"found {device_wait_s!r}")
    return float(device_wait_s)


class DeviceLock:
    """The bench lock of ``tr``'s device; a context manager. ``hold_s``: the longest this holder
    keeps it; ``wait_s``: how long :meth:`acquire` waits for another holder (0 = refuse at once)."""

    def __init__(self, tr: Transport, hold_s: float, wait_s: float = DEFAULT_DEVICE_WAIT_S):
        self.tr = tr
        self.path = f"{tr.target.workdir.rstrip('/')}/{LOCK_NAME}"
        self.hold_s = float(hold_s)
        self.wait_s = check_wait(wait_s)
        self.token = uuid.uuid4().hex
        self.held = False
        self._host, self._boot = _clean(socket.gethostname()), _boot_id()
        self._first_seen: dict[str, float] = {}  # token ("" = no owner) -> when first judged orphaned/stale

    def __enter__(self) -> "DeviceLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, waiting up to ``wait_s``; DeviceBusyError when it stays held."""
        start = time.monotonic()
        delay, told = POLL_FIRST_S, False
        while True:
            busy = self._try()
            if busy is None:
                self.held = True
                log.debug("%s: took the bench lock %s", self.tr.target.name, self.path)
                return
            device_now, owner = busy
            why = self._stale(device_now, owner)
            if why and self._remove(owner.token if owner else "", force=self._stuck(owner)):
                log.warning("%s: removed a stale bench lock %s (%s)", self.tr.target.name, self.path, why)
                continue
            waited = time.monotonic() - start
            if waited >= self.wait_s:
                raise DeviceBusyError(self._busy_message(device_now, owner, waited))
            if not told:
                log.info("%s: another bench holds %s; waiting up to %g s for it", self.tr.target.name,
                         self.path, self.wait_s)
                told = True
            time.sleep(min(delay, self.wait_s - waited))
            delay = min(delay * 2, POLL_MAX_S)

    def release(self) -> None:
        """Give the lock back (only if it is still ours); a failure to do so is logged, not raised."""
        if not self.held:
            return
        self.held = False
        try:
            self._remove(self.token)
        except TransportError as exc:  # the bench's own outcome matters more; the lock goes stale in time
            log.warning("%s: could not remove the bench lock %s: %s", self.tr.target.name, self.path, exc)

    # -- one round trip each --------------------------------------------------------
    def _try(self) -> tuple[int, LockOwner | None] | None:
        argv = ["sh", "-c", _ACQUIRE, "sh", self.path, self.token, self._host, self._boot, str(os.getpid()),
                f"{self.hold_s:.0f}", _clean(getpass.getuser())]
        res = self.tr.run(argv, timeout_s=SHORT_TIMEOUT_S, check=False)
        lines = res.stdout.strip().splitlines()
        if res.exit_code == 0 and lines and lines[0] == "acquired":
            return None
        if res.exit_code != 0 or not lines or not re.fullmatch(r"busy -?\d+", lines[0]):
            raise TransportError(f"on target '{self.tr.target.name}': expected to create or find the bench lock "
                                 f"{self.path}, but the device said (exit {res.exit_code}): "
                                 f"{tail((res.stdout + res.stderr).strip(), 500) or '(nothing)'}; check that "
                                 "the workdir is writable there")
        return int(lines[0].split()[1]), LockOwner.parse(lines[1:])

    def _remove(self, token: str, force: bool = False) -> bool:
        res = self.tr.run(["sh", "-c", _REMOVE, "sh", self.path, token, "1" if force else "0"],
                          timeout_s=SHORT_TIMEOUT_S, check=False)
        return "removed" in res.stdout

    # -- judging a holder -----------------------------------------------------------
    def _stale(self, device_now: int, owner: LockOwner | None) -> str | None:
        """Why the lock is stale, or None while its holder may still be at work."""
        if owner is None:
            if self._seen_for("") >= ORPHAN_AFTER_S:
                return f"no owner file for {ORPHAN_AFTER_S:g} s"
            return None
        self._first_seen.pop("", None)
        if device_now > owner.since + owner.hold_s:
            return f"held past its limit of {owner.hold_s:g} s: {owner.describe(device_now)}"
        if owner.host == self._host and owner.boot == self._boot and not _pid_alive(owner.pid):
            return f"its process is gone: {owner.describe(device_now)}"
        return None

    def _stuck(self, owner: LockOwner | None) -> bool:
        """True when a stale lock has resisted breaking this long: a breaker died midway."""
        return owner is not None and self._seen_for(owner.token) >= ORPHAN_AFTER_S

    def _seen_for(self, token: str) -> float:
        first = self._first_seen.setdefault(token, time.monotonic())
        return time.monotonic() - first

    def _busy_message(self, device_now: int, owner: LockOwner | None, waited: float) -> str:
        who = (f"another bench holds it ({owner.describe(device_now)})" if owner else
               "it has no owner record yet (a bench taking it, or one that died while taking it)")
        return (f"target '{self.tr.target.name}' is busy: expected the bench lock {self.path} to be free, "
                f"but {who}; waited {waited:.1f} s (device wait {self.wait_s:g} s). Concurrent benches spoil "
                "each other's latencies: wait for that bench to finish, pass a longer --device-wait, or, if no "
                f"bench is running there, remove {self.path} on the device")
