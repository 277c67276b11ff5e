"""Parsers of the runtimes' own benchmark binaries' output.

Android usually has no Python, so instead of the runner ``edge bench`` runs the runtime's
own benchmark tool named in the target (TFLite ``benchmark_model``, ExecuTorch
``executor_runner``); each backend says which target field names its tool and how to call
it (``Backend.native_tool``, ``native_bench_argv``, ``parse_native_output``), and the parsers
here turn the tool's text into the runner's result dict (schema_version 1, see
``edge/runner/runner.py``). Pure functions.
"""
from __future__ import annotations

import math
import re

from .errors import RunnerError
from .transports.base import tail

def native_bench_argv(backend: str, binary: str, artifact: str, warmup: int, iterations: int,
                      threads: int | None) -> list[str]:
    """Device argv running ``backend``'s own benchmark binary on ``artifact`` (the backend says how)."""
    from .backends import BACKENDS, get_backend

    be = get_backend(backend)
    if be.native_tool is None:
        with_tools = [b for b in BACKENDS if get_backend(b).native_tool]
        raise RunnerError(f"no native benchmark tool for backend '{backend}'; expected one of "
                          f"{', '.join(with_tools)}")
    return be.native_bench_argv(binary, artifact, warmup, iterations, threads)


_NUM = r"((?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)"  # a decimal number; not ".", "1.2.3"


def _finite(text: str, what: str, tool: str) -> float:
    """A number the tool printed, or a RunnerError when it overflows a float (1e999)."""
    value = float(text)
    if not math.isfinite(value):  # float() of a long digit string is inf, never an error
        raise RunnerError(f"expected {tool} to print a finite {what}, found {text[:40]}; "
                          "check the tool's build and rerun")
    return value


def _count(text: str, what: str, tool: str) -> int:
    """A run count the tool printed: at least one run."""
    if not 1 <= int(text) <= 10**12:
        raise RunnerError(f"expected {tool} to report between 1 and 10^12 {what}s, found {text[:40]}; "
                          "rerun with --iterations >= 1")
    return int(text)
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
    tool = "benchmark_model"
    count, _first, _curr, lo, hi, avg, std, p5, median, p95 = stats[-1]
    ms = lambda us, what: _finite(us, what, tool) * 1e-3  # noqa: E731 - the tool prints microseconds
    summary = {"count": _count(count, "run", tool), "mean": ms(avg, "avg"), "std": ms(std, "std"),
               "min": ms(lo, "min"), "max": ms(hi, "max")}
    if median:
        summary.update(p5=ms(p5, "p5"), p50=ms(median, "median"), p95=ms(p95, "p95"))
    peak = _TFL_PEAK_MONITOR.search(text) or _TFL_PEAK.search(text)
    delta = _TFL_DELTA.search(text)
    result = _result("tflite-benchmark_model", summary_ms=summary, iterations=summary["count"],
                     load_ms=ms(timings.group(1), "Init time"),
                     first_inference_ms=ms(timings.group(2), "First inference time"),
                     peak_rss_mb=_finite(peak.groups()[-1], "peak memory", tool) if peak else None)
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
    tool = "executor_runner"
    load = _ET_LOAD.search(text)
    samples = [_finite(ms, "iteration time", tool) for _i, _n, ms in _ET_ITER.findall(text)]
    runs = _count(total.group(1), "execution", tool)
    result = _result("executorch-executor_runner",
                     load_ms=_finite(load.group(1), "model load time", tool) if load else None)
    if samples:
        kept = samples[warmup:] if len(samples) > warmup else samples
        result.update(latencies_ms=kept, first_inference_ms=samples[0], iterations=len(kept),
                      warmup=len(samples) - len(kept))
    else:
        result.update(summary_ms={"count": runs, "mean": _finite(total.group(2), "total time", tool) / runs},
                      iterations=runs, warmup=0)
    return result
