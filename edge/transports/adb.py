"""adb transport: Android devices through the ``adb`` client (``adb -s SERIAL shell/push``).

Network devices (``serial: host:port`` or ``host:``) are attached with ``adb connect`` first.
Android usually has no Python, so besides the transport this module holds the argv builders
and output parsers for the runtimes' own benchmark binaries (TFLite ``benchmark_model``,
ExecuTorch ``executor_runner``); the parsers turn their text into the runner's result dict
(schema_version 1, see ``edge/runner/runner.py``).
"""
from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

from ..errors import CommandTimeoutError, ConnectError, RunnerError
from .base import TIMEOUT_WRAPPER, RunResult, Transport, tail
from .local import run_subprocess

ADB_TIMEOUT_S = 30.0
DEFAULT_ADB_PORT = 5555


class AdbTransport(Transport):
    """An Android device reached with the adb client."""

    name = "adb"

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

    def _upload(self, local: Path, remote_path: str, timeout_s: float) -> None:
        res = self._adb(self.adb_argv("push", str(local), remote_path), timeout_s)
        if res.exit_code != 0:
            raise ConnectError(f"target '{self.target.name}': adb push of {local} failed: "
                               f"{tail(res.stderr.strip() or res.stdout.strip())}")

    def _download(self, remote_path: str, local: Path, timeout_s: float) -> None:
        res = self._adb(self.adb_argv("pull", remote_path, str(local)), timeout_s)
        if res.exit_code != 0:
            raise ConnectError(f"target '{self.target.name}': adb pull of {remote_path} failed: "
                               f"{tail(res.stderr.strip() or res.stdout.strip())}")


# --- the runtimes' own benchmark binaries ------------------------------------------------

NATIVE_TOOLS = {"tflite": "benchmark_model", "executorch": "executor_runner"}


def native_bench_argv(backend: str, binary: str, artifact: str, warmup: int, iterations: int,
                      threads: int | None) -> list[str]:
    """Device argv running the runtime's own benchmark binary on ``artifact``."""
    if backend == "tflite":
        argv = [binary, f"--graph={artifact}", f"--num_runs={iterations}",
                f"--warmup_runs={warmup}", "--min_secs=0", "--warmup_min_secs=0"]
        if threads:
            argv.append(f"--num_threads={threads}")
        return argv
    if backend == "executorch":
        # executor_runner has no warm-up flag: the first `warmup` executions are dropped.
        argv = [binary, f"--model_path={artifact}", f"--num_executions={warmup + iterations}"]
        if threads:
            argv.append(f"--cpu_threads={threads}")
        return argv
    raise RunnerError(f"no native benchmark tool for backend '{backend}'; expected one of "
                      f"{', '.join(NATIVE_TOOLS)}")


_NUM = r"([0-9.]+(?:e[+-]?\d+)?)"
_TFL_STATS = re.compile(
    rf"^(?:[A-Z] tflite\s*:\s*)?count=(\d+) first={_NUM} curr={_NUM} min={_NUM} max={_NUM} "
    rf"avg={_NUM} std={_NUM}(?: p5={_NUM} median={_NUM} p95={_NUM})?", re.M)
_TFL_TIMINGS = re.compile(rf"Inference timings in us: Init: {_NUM}, First inference: {_NUM}, "
                          rf"Warmup \(avg\): {_NUM}, Inference \(avg\): {_NUM}")
_TFL_PEAK = re.compile(rf"Peak memory footprint \(MB\): init={_NUM} overall={_NUM}")
_TFL_PEAK_MONITOR = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: {_NUM}")
_TFL_DELTA = re.compile(rf"Memory footprint delta from the start of the tool \(MB\): "
                        rf"init={_NUM} overall={_NUM}")


def _result(runtime: str, **values) -> dict:
    base = {"schema_version": 1, "runtime": runtime, "runtime_version": None, "backend": None,
            "artifact": None, "threads": None, "warmup": None, "iterations": None,
            "latencies_ms": [], "summary_ms": None, "load_ms": None, "first_inference_ms": None,
            "peak_rss_mb": None, "context": {}}
    base.update(values)
    return base


def parse_benchmark_model(text: str) -> dict:
    """Parse TFLite ``benchmark_model`` output (microseconds) into the runner result dict.

    The tool prints only summary statistics, so ``latencies_ms`` is empty and
    ``summary_ms`` holds count/mean/std/min/max (and p5/p50/p95 on newer builds).
    """
    timings = _TFL_TIMINGS.search(text)
    stats = _TFL_STATS.findall(text)
    if timings is None or not stats:
        raise RunnerError("benchmark_model printed no 'Inference timings in us' summary; output "
                          f"ends with: {tail(text.strip(), 600) or '(empty)'}")
    count, _first, _curr, lo, hi, avg, std, p5, median, p95 = stats[-1]
    us = 1e-3
    summary = {"count": int(count), "mean": float(avg) * us, "std": float(std) * us,
               "min": float(lo) * us, "max": float(hi) * us}
    if median:
        summary.update(p5=float(p5) * us, p50=float(median) * us, p95=float(p95) * us)
    peak = _TFL_PEAK_MONITOR.search(text) or _TFL_PEAK.search(text)
    delta = _TFL_DELTA.search(text)
    result = _result("tflite-benchmark_model", summary_ms=summary, iterations=int(count),
                     load_ms=float(timings.group(1)) * us,
                     first_inference_ms=float(timings.group(2)) * us,
                     peak_rss_mb=float(peak.groups()[-1]) if peak else None)
    if delta:
        result["memory_delta_mb"] = {"init": float(delta.group(1)), "overall": float(delta.group(2))}
    return result


_ET_ITER = re.compile(rf"Iteration (\d+) of (\d+): {_NUM} ms")
_ET_LOAD = re.compile(rf"Model loaded in {_NUM} ms")
_ET_TOTAL = re.compile(rf"Model executed successfully (\d+) time\(s\) in {_NUM} ms")


def parse_executor_runner(text: str, warmup: int = 0) -> dict:
    """Parse ExecuTorch ``executor_runner`` logs into the runner result dict.

    Per-execution lines ("Iteration i of n: x ms") give raw samples; the first ``warmup``
    are dropped. Older builds print only the total, which becomes a mean in ``summary_ms``.
    """
    total = _ET_TOTAL.search(text)
    if total is None:
        raise RunnerError("executor_runner did not report 'Model executed successfully'; output "
                          f"ends with: {tail(text.strip(), 600) or '(empty)'}")
    load = _ET_LOAD.search(text)
    samples = [float(ms) for _i, _n, ms in _ET_ITER.findall(text)]
    runs = int(total.group(1))
    result = _result("executorch-executor_runner", load_ms=float(load.group(1)) if load else None)
    if samples:
        kept = samples[warmup:] if len(samples) > warmup else samples
        result.update(latencies_ms=kept, first_inference_ms=samples[0], iterations=len(kept),
                      warmup=len(samples) - len(kept))
    else:
        result.update(summary_ms={"count": runs, "mean": float(total.group(2)) / runs},
                      iterations=runs, warmup=0)
    return result
