"""adb transport: Android devices through the ``adb`` client (``adb -s SERIAL shell/push``).

Network devices (``serial: host:port`` or ``host:``) are attached with ``adb connect`` first.
Like every transport it moves bytes and runs argv; the runtimes' own benchmark binaries that
Android runs instead of the runner are built and parsed in :mod:`edge.bench_native`.
"""
from __future__ import annotations

import posixpath
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

from ..errors import CommandTimeoutError, ConnectError, TransportError
from .base import TIMEOUT_WRAPPER, RunResult, Transport, invalid_field, tail
from .local import run_subprocess

ADB_TIMEOUT_S = 30.0
DEFAULT_ADB_PORT = 5555


class AdbTransport(Transport):
    """An Android device reached with the adb client."""

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

    def _adb(self, args: list[str], timeout_s: float) -> RunResult:
        return run_subprocess(args, timeout_s, f"on target '{self.target.name}' ({self.serial})")

    def _connect(self) -> None:
        if shutil.which("adb") is None:
            raise ConnectError(f"target '{self.target.name}' needs the adb client; install Android "
                               "platform tools (apt-get install adb) and put `adb` on PATH")
        if self.is_network:
            res = self._adb(["adb", "connect", self.serial], ADB_TIMEOUT_S)
            if res.exit_code != 0 or "connected to" not in res.stdout:
                raise ConnectError(
                    f"target '{self.target.name}': `adb connect {self.serial}` failed: "
                    f"{tail((res.stdout + res.stderr).strip()) or '(no output)'}; enable wireless "
                    "debugging on the device and check the address")
        try:
            res = self._adb(self.adb_argv("get-state"), ADB_TIMEOUT_S)
        except CommandTimeoutError as exc:  # adb may wait for a device that never answers
            raise ConnectError(f"target '{self.target.name}': no answer from adb device "
                               f"'{self.serial}' within {ADB_TIMEOUT_S:g} s ({exc})") from None
        if res.exit_code != 0 or res.stdout.strip() != "device":
            raise ConnectError(
                f"target '{self.target.name}': adb device '{self.serial}' is not available "
                f"(state: {tail((res.stdout + res.stderr).strip()) or 'unknown'}); expected it in "
                "`adb devices` as 'device': plug it in, accept the USB debugging prompt, or fix "
                "the serial in the target")

    def _disconnect(self) -> None:
        pass

    def _exec(self, argv: list[str], timeout_s: float) -> RunResult:
        res = self._adb(self.shell_argv(argv, timeout_s), timeout_s)
        return RunResult(argv=argv, exit_code=res.exit_code, stdout=res.stdout.replace("\r\n", "\n"),
                         stderr=res.stderr, duration_s=res.duration_s)

    def _where(self) -> str:
        return f"target '{self.target.name}' (adb device '{self.serial}')"

    @staticmethod
    def _output(res: RunResult) -> str:
        # adb push/pull print their error on stdout, the adb daemon's notices go to stderr
        text = "\n".join(s for s in (res.stderr.strip(), res.stdout.strip()) if s)
        return tail(text) or "(no output)"

    def _upload(self, local: Path, remote_path: str, timeout_s: float, offset: int = 0) -> None:
        # adb push cannot resume (``_remote_size`` is unknown, so offset is 0) nor report
        # progress: bound it by the stall time plus the size at 1 MB/s
        res = self._adb(self.adb_argv("push", str(local), remote_path),
                        timeout_s + local.stat().st_size / 1e6)
        if res.exit_code != 0:
            raise TransportError(
                f"{self._where()}: adb push of {local} to {remote_path} failed: "
                f"{self._output(res)}; "
                f"check that `adb devices` lists '{self.serial}' as 'device' and that "
                f"{posixpath.dirname(remote_path) or '.'} on it is writable and has free space")

    def _download(self, remote_path: str, local: Path, timeout_s: float) -> None:
        res = self._adb(self.adb_argv("pull", remote_path, str(local)), timeout_s)
        if res.exit_code != 0:
            raise TransportError(
                f"{self._where()}: adb pull of {remote_path} to {local} failed: "
                f"{self._output(res)}; "
                f"check that `adb devices` lists '{self.serial}' as 'device' and that "
                f"{remote_path} exists on it and is readable")
