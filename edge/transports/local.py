"""Local transport: this machine, through subprocess and file copies."""
from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import CommandTimeoutError, ConnectError
from .base import RunResult, Transport, tail
from .device_shell import Killed


def run_subprocess(argv: list[str], timeout_s: float, what: str) -> RunResult:
    """Run argv in its own process group; kill the whole group past the timeout."""
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        raise ConnectError(f"{what}: cannot start `{argv[0]}`: {exc}") from exc
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise CommandTimeoutError(
            f"{what}: `{' '.join(argv)}` still running after {timeout_s:g} s and was killed; "
            f"raise the timeout or check the device. stderr: "
            f"{tail(err.decode(errors='replace').strip()) or '(empty)'}"
        ) from None
    return RunResult(argv=argv, exit_code=proc.returncode, stdout=out.decode(errors="replace"),
                     stderr=err.decode(errors="replace"),
                     duration_s=time.perf_counter() - start)


class LocalTransport(Transport):
    """Runs commands and copies files on this machine."""

    name = "local"
    default_python = sys.executable  # the interpreter running edge has its runtimes

    @classmethod
    def default_workdir(cls, fields: dict[str, Any]) -> str:
        """``~/.cache/edge/local`` (created), or a per-user temp dir when that is not writable."""
        workdir = Path("~/.cache/edge/local").expanduser()
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError:
            workdir = Path(tempfile.gettempdir()) / f"edge-local-{getpass.getuser()}"
        return str(workdir)

    def _connect(self) -> None:
        Path(self.target.workdir).expanduser().mkdir(parents=True, exist_ok=True)

    def _disconnect(self) -> None:
        pass

    def _exec(self, argv: list[str], timeout_s: float) -> RunResult:
        result = run_subprocess(argv, timeout_s, f"on target '{self.target.name}'")
        if result.exit_code < 0:  # subprocess's way of saying "died of signal -code"
            result = replace(result, killed=Killed(-result.exit_code, None, None))
        return result

    def _remote_size(self, remote_path: str) -> int | None:
        try:
            return os.stat(Path(remote_path).expanduser()).st_size
        except FileNotFoundError:
            return None

    def free_bytes(self, remote_dir: str) -> int | None:
        path = Path(remote_dir).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(path).free

    def _upload(self, local: Path, remote_path: str, timeout_s: float, offset: int = 0) -> None:
        fd = os.open(Path(remote_path).expanduser(), os.O_WRONLY | os.O_CREAT, 0o644)
        with open(local, "rb") as src, os.fdopen(fd, "wb") as dst:  # never truncates: see put
            src.seek(offset)
            dst.seek(offset)
            shutil.copyfileobj(src, dst, 1 << 20)

    def _download(self, remote_path: str, local: Path, timeout_s: float) -> None:
        shutil.copyfile(Path(remote_path).expanduser(), local)
