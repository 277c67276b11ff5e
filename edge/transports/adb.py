"""adb transport: Android devices (and Linux boards running adbd) through the ``adb`` client
(``adb -s SERIAL shell/push/pull``).

Network devices (``serial: host:port`` or ``host:``) are attached with ``adb connect`` first.
The adb server is whichever the environment names (``ANDROID_ADB_SERVER_PORT``, else 5037).
Every adb call runs in its own process group with its output in files, not pipes (an adb
server the client forks keeps nothing of ours open), and is killed past its timeout: a hung
server fails the call, it does not hang edge. ``adb shell`` joins its arguments with spaces
for the device's ``sh -c``, so the command line is quoted here, one argument per word.

When an adb call fails, the device's state is read again: a device gone ``offline`` or
missing from ``adb devices`` is a :class:`ConnectError` (a push it cut off leaves the
destination as it was: put() writes to a partial name and renames only a verified file).

Like every transport it moves bytes and runs argv; the runtimes' own benchmark binaries that
Android runs instead of the runner are built and parsed in :mod:`edge.bench_native`.
"""
from __future__ import annotations

import os
import posixpath
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import CommandTimeoutError, ConnectError, TransportError
from .base import TIMEOUT_WRAPPER, RunResult, Transport, invalid_field, shown, tail

ADB_TIMEOUT_S = 30.0
DEFAULT_ADB_PORT = 5555
# what the adb client itself prints when it lost the device (not the command's own stderr)
_ADB_LOST = re.compile(r"^(adb: )?(error: )?(device offline|device '[^']*' not found|closed|"
                       r"no devices/emulators found|protocol fault|failed to get feature set|"
                       r"failed to read copy response|connection reset)", re.M)
_STATE_HINTS = {
    "offline": "adb lists it as offline: the device is unreachable or its adbd stopped; the adb "
               "server reconnects a network device by itself once it answers again (check its "
               "network and power, or run `adb reconnect offline`)",
    "unauthorized": "accept the USB debugging prompt on the device",
    "missing": "it is not in `adb devices`: plug it in, enable USB or wireless debugging, or fix "
               "the serial in the target",
}


class AdbTransport(Transport):
    """An Android device (or any adbd) reached with the adb client."""

    name = "adb"

    @classmethod
    def default_workdir(cls, fields: dict[str, Any]) -> str:
        """``/data/local/tmp/edge``: adb's shell user can write and execute there without root."""
        return "/data/local/tmp/edge"

    @classmethod
    def validate_fields(cls, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        """An adb target needs a ``serial`` (``adb devices``) or a ``host`` for adb over Wi-Fi."""
        if not (fields.get("serial") or fields.get("host")):
            raise invalid_field(name, "serial", None, "a serial (or host) for transport adb")
        return super().validate_fields(name, fields)

    @property
    def serial(self) -> str:
        t = self.target
        if t.serial:
            return t.serial
        return f"{t.host}:{t.port or DEFAULT_ADB_PORT}"

    @property
    def is_network(self) -> bool:
        return bool(re.fullmatch(r"[\w.\-]+:\d+", self.serial))

    def adb_argv(self, *args: str) -> list[str]:
        """The host-side argv of one adb call addressed to this device."""
        return ["adb", "-s", self.serial, *args]

    def shell_argv(self, argv: list[str], timeout_s: float) -> list[str]:
        """adb argv running ``argv`` on the device under a device-side timeout."""
        inner = ["sh", "-c", TIMEOUT_WRAPPER, str(int(timeout_s) + 2), *argv]
        return self.adb_argv("shell", shlex.join(inner))

    def _where(self) -> str:
        return f"target '{self.target.name}' (adb device '{self.serial}')"

    def _adb(self, args: list[str], timeout_s: float, what: list[str] | None = None) -> RunResult:
        """Run adb ``args``; CommandTimeoutError (naming ``what``, else args) past timeout_s."""
        start = time.perf_counter()
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                        start_new_session=True)
            except OSError as exc:
                raise ConnectError(f"{self._where()}: cannot start `{args[0]}`: {exc}") from exc
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                err.seek(0)
                raise CommandTimeoutError(
                    f"on {self._where()}: `{shown(what or args)}` still running after "
                    f"{timeout_s:g} s and was killed; raise the timeout or check the device. "
                    f"stderr: {tail(err.read().decode(errors='replace').strip()) or '(empty)'}"
                ) from None
            out.seek(0)
            err.seek(0)
            return RunResult(argv=args, exit_code=code, stdout=out.read().decode(errors="replace"),
                             stderr=err.read().decode(errors="replace"),
                             duration_s=time.perf_counter() - start)

    def _adb_quick(self, args: list[str]) -> RunResult:
        """A short adb call; a server that does not answer is a ConnectError."""
        try:
            return self._adb(args, ADB_TIMEOUT_S)
        except CommandTimeoutError as exc:
            raise ConnectError(
                f"{self._where()}: no answer from the adb server within {ADB_TIMEOUT_S:g} s "
                f"({exc}); if `adb devices` hangs too, stop the server (`adb kill-server`, "
                "else kill its `adb fork-server` process) and try again") from None

    def devices(self) -> dict[str, str]:
        """{serial: state} from ``adb devices`` (device, offline, unauthorized, ...)."""
        rows = self._adb_quick(["adb", "devices"]).stdout.splitlines()[1:]
        return {f[0]: f[1] for line in rows if len(f := line.split()) >= 2}

    def _not_available(self, doing: str, detail: str = "") -> ConnectError | None:
        """The ConnectError for a device adb does not list as ``device`` (None if it does)."""
        listed = self.devices()
        state = listed.get(self.serial, "missing")
        if state == "device":
            return None
        known = (f" (`adb devices` lists: {', '.join(listed) or 'nothing'})"
                 if state == "missing" else "")
        hint = _STATE_HINTS.get(state, "expected it in `adb devices` as 'device'")
        return ConnectError(f"{self._where()}: {doing}: the device is {state}{known}; {hint}"
                            + (f". adb said: {tail(detail.strip())}" if detail.strip() else ""))

    def _connect(self) -> None:
        if shutil.which("adb") is None:
            raise ConnectError(f"target '{self.target.name}' needs the adb client; install Android "
                               "platform tools (apt-get install adb) and put `adb` on PATH")
        if self.is_network:
            res = self._adb_quick(["adb", "connect", self.serial])
            if res.exit_code != 0 or "connected to" not in res.stdout:
                if self.serial in self.devices():  # known to the server, but not answering
                    raise self._not_available(f"`adb connect {self.serial}` failed",
                                              res.stdout + res.stderr) or ConnectError(
                        f"{self._where()}: `adb connect` failed: {tail(res.stdout.strip())}")
                raise ConnectError(
                    f"target '{self.target.name}': `adb connect {self.serial}` failed: "
                    f"{tail((res.stdout + res.stderr).strip()) or '(no output)'}; enable wireless "
                    "debugging on the device (or start its adbd) and check the address")
        res = self._adb_quick(self.adb_argv("get-state"))
        if res.exit_code != 0 or res.stdout.strip() != "device":
            raise self._not_available("cannot use it", res.stdout + res.stderr) or ConnectError(
                f"{self._where()}: `adb get-state` said "
                f"{tail((res.stdout + res.stderr).strip()) or '(nothing)'}, expected 'device'")

    def _disconnect(self) -> None:
        pass

    def _lost(self, res: RunResult, doing: str) -> ConnectError | None:
        """A ConnectError when a failed adb call lost the device, else None."""
        if res.exit_code == 0 or not _ADB_LOST.search(res.stderr + "\n" + res.stdout):
            return None
        return self._not_available(f"lost it while {doing}", res.stderr + res.stdout)

    def _exec(self, argv: list[str], timeout_s: float) -> RunResult:
        res = self._adb(self.shell_argv(argv, timeout_s), timeout_s, what=argv)
        if (lost := self._lost(res, f"running `{shown(argv)}`")) is not None:
            raise lost
        return RunResult(argv=argv, exit_code=res.exit_code, stdout=res.stdout.replace("\r\n", "\n"),
                         stderr=res.stderr, duration_s=res.duration_s)

    @staticmethod
    def _output(res: RunResult) -> str:
        # adb push/pull print their error on stdout, the adb daemon's notices go to stderr
        text = "\n".join(s for s in (res.stderr.strip(), res.stdout.strip()) if s)
        return tail(text) or "(no output)"

    def _upload(self, local: Path, remote_path: str, timeout_s: float, offset: int = 0) -> None:
        # adb push cannot resume (``_remote_size`` is unknown, so offset is 0; a push starts
        # the partial file over) nor report progress: bound it by the stall time plus the
        # size at 1 MB/s
        res = self._adb(self.adb_argv("push", str(local), remote_path),
                        timeout_s + local.stat().st_size / 1e6)
        if res.exit_code != 0:
            if (lost := self._lost(res, f"pushing {local.name} to {remote_path}")) is not None:
                raise lost
            raise TransportError(
                f"{self._where()}: adb push of {local} to {remote_path} failed: "
                f"{self._output(res)}; "
                f"check that `adb devices` lists '{self.serial}' as 'device' and that "
                f"{posixpath.dirname(remote_path) or '.'} on it is writable and has free space")

    def _download(self, remote_path: str, local: Path, timeout_s: float) -> None:
        res = self._adb(self.adb_argv("pull", remote_path, str(local)), timeout_s)
        if res.exit_code != 0:
            if (lost := self._lost(res, f"pulling {remote_path}")) is not None:
                raise lost
            raise TransportError(
                f"{self._where()}: adb pull of {remote_path} to {local} failed: "
                f"{self._output(res)}; "
                f"check that `adb devices` lists '{self.serial}' as 'device' and that "
                f"{remote_path} exists on it and is readable")
