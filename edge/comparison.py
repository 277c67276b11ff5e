"""``edge compare``: the main job. Plan, compress, export, validate, deploy and bench a
model on one target for every backend (and the top plans of each backend's Pareto front),
then report and store the run.

Every step is resumable: after each completed step its result is recorded in
``<out_dir>/state.json`` (written atomically), keyed by what determines it (model,
profile, constraints, backend and plan for plans and exports; artifact sha256, target
and bench settings for measurements). Re-running the same command after an interruption
skips what is done and continues where it stopped; the exporter's content cache makes
even a fresh ``out_dir`` cheap to re-export.

A backend or plan that fails becomes a row carrying its error; the others go on.
:attr:`CompareResult.exit_code` is 0 when every row succeeded, 10 (``PartialFailure``)
when some failed, and the first failure's own exit code when all failed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .benchmark import DEFAULT_ITERATIONS, DEFAULT_WARMUP
from .compare_steps import Candidate, Steps, all_backends
from .errors import ConfigError, EdgeError, PartialFailure, ResultsError, first_line
from .fileio import write_atomic
from .results import ResultsStore, Run, RunRow, new_run_id

log = logging.getLogger(__name__)

STATE_NAME = "state.json"
STATE_VERSION = 1


@dataclass(frozen=True)
class ProgressEvent:
    """One step of one backend: ``status`` is start, done, cached or failed."""

    backend: str
    step: str
    status: str
    plan_name: str = ""
    seconds: float = 0.0
    detail: str = ""


@dataclass
class StepRecord:
    backend: str
    plan_name: str
    step: str
    cached: bool
    seconds: float
    error: str | None = None


@dataclass
class CompareResult:
    """The stored run, where its files are, and what each step did."""

    run: Run
    out_dir: Path
    paths: dict = field(default_factory=dict)  # json, csv, html, plots {name: path}
    steps: list[StepRecord] = field(default_factory=list)
    db_path: Path | None = None

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def exit_code(self) -> int:
        failed = [r for r in self.run.rows if r.error]
        if not failed:
            return 0
        if len(failed) < len(self.run.rows):
            return PartialFailure.exit_code
        return failed[0].exit_code or EdgeError.exit_code

    def cached_steps(self, step: str | None = None) -> list[StepRecord]:
        return [s for s in self.steps if s.cached and (step is None or s.step == step)]

    def executed_steps(self, step: str | None = None) -> list[StepRecord]:
        return [s for s in self.steps if not s.cached and (step is None or s.step == step)]


class CompareState:
    """``state.json`` in the output folder: completed steps by key, rewritten atomically."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / STATE_NAME
        self.data = {"version": STATE_VERSION, "plans": {}, "exports": {}, "benches": {}}
        if self.path.exists():
            try:
                loaded = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                log.warning("ignoring unreadable %s (%s); starting over", self.path, exc)
                return
            if loaded.get("version") == STATE_VERSION:
                self.data.update(loaded)

    def get(self, section: str, key: str):
        return self.data[section].get(key)

    def put(self, section: str, key: str, value) -> None:
        self.data[section][key] = value
        write_atomic(self.path, json.dumps(self.data, indent=1, sort_keys=True, default=str))


def key_of(*parts) -> str:
    """A short stable hash of JSON-able parts."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def host_context() -> dict:
    """Where edge itself ran (the device's own context comes from the runner)."""
    from . import __version__

    return {"hostname": socket.gethostname(), "kernel": platform.release(), "machine": platform.machine(),
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "edge": __version__}


def _model_fingerprint(model_ref: str) -> str:
    """Zoo names are fixed by the code; files and directories by their modification times."""
    path = Path(model_ref.rpartition(":")[0] if ".py:" in model_ref else model_ref).expanduser()
    texts = [Path(os.environ[v]) for v in ("EDGE_EVAL_TEXT", "EDGE_CALIB_TEXT") if os.environ.get(v)]
    files = [] if not path.exists() else [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    files += [t for t in texts if t.is_file()]  # a language model's own evaluation/calibration text
    if not files:
        return model_ref
    return key_of(model_ref, [(str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files])


def _language_models_only(name: str) -> bool:
    from .backends import get_backend

    return get_backend(name).language_models_only


def _resolve_backends(backends, runtimes: tuple[str, ...] | None) -> list[str]:
    """'all' means every registered backend the profile's device can run."""
    known = all_backends()
    if backends in (None, "all") or backends == ["all"]:
        chosen = [b for b in known if runtimes is None or b in runtimes]
        if not chosen:
            raise ConfigError(f"expected the profile to list a runtime among {known}, found {list(runtimes)}")
        return chosen
    names = [b.strip() for b in (backends.split(",") if isinstance(backends, str) else backends) if b.strip()]
    unknown = [b for b in names if b not in known]
    if unknown or not names:
        raise ConfigError(f"expected backends from {', '.join(known)} (or 'all'), found {unknown or names}")
    return list(dict.fromkeys(names))


def compare(model_ref: str, profile: str | None, target: str = "local", backends="all",
            min_accuracy: float | None = None, max_latency_ms: float | None = None,
            max_size_mb: float | None = None, plans: int = 1, out_dir: str | Path = "edge-out",
            db: str | Path | None = None, targets_file: str | Path | None = None,
            warmup: int = DEFAULT_WARMUP, iterations: int = DEFAULT_ITERATIONS, threads: int | None = None,
            progress: Callable[[ProgressEvent], None] | None = None, prompt_tokens: int | None = None,
            new_tokens: int | None = None, device_wait_s: float | None = None) -> CompareResult:
    """Run the whole pipeline for every backend on ``target`` and store the run.

    ``profile`` defaults to the target's own profile. ``plans`` > 1 also measures the next
    best plans of each backend's Pareto front. For language models ``prompt_tokens`` and
    ``new_tokens`` size the generation measured on the device, and ``device_wait_s`` how long a
    bench waits for a device another bench holds (see :func:`edge.benchmark.bench`). Returns a :class:`CompareResult`; failures
    of single backends are rows with an error, not exceptions.
    """
    if plans < 1 or iterations < 1 or warmup < 0:
        raise ConfigError(f"expected plans >= 1, iterations >= 1, warmup >= 0; found plans={plans}, "
                          f"iterations={iterations}, warmup={warmup}")
    steps = Steps(model_ref, target, targets_file, device_wait_s=device_wait_s)
    profile_name = steps.profile_name(profile)
    names = _resolve_backends(backends, steps.runtimes())
    if backends in (None, "all") or backends == ["all"]:  # 'all': the backends that can run this model
        names = [n for n in names if not _language_models_only(n) or steps.spec.generation is not None] or names
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    constraints = {"min_accuracy": min_accuracy, "max_latency_ms": max_latency_ms, "max_size_mb": max_size_mb}
    args = {"model": model_ref, "profile": profile_name, "target": target, "backends": names, **constraints,
            "plans": plans, "warmup": warmup, "iterations": iterations, "threads": threads,
            "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
            "out_dir": str(out), "targets_file": str(targets_file) if targets_file else None}
    runner = _Runner(steps, CompareState(out), out, progress, _model_fingerprint(model_ref),
                     {"profile": profile_name, "profile_data": key_of(steps.profile_data()), **constraints,
                      "plans": plans},
                     {"target": target, "warmup": warmup, "iterations": iterations, "threads": threads,
                      **({"prompt_tokens": prompt_tokens, "new_tokens": new_tokens}
                         if prompt_tokens is not None or new_tokens is not None else {})})
    rows = []
    for backend in names:
        rows += runner.run_backend(backend)
    ok = sum(1 for r in rows if r.ok)
    run = Run(model=model_ref, profile=profile_name, target=target, args=args,
              status="ok" if ok == len(rows) else "partial" if ok else "failed",
              context={"host": host_context(), "device": next((r.context for r in rows if r.context), {})},
              rows=rows, extra={"out_dir": str(out), "notes": steps.notes(profile_name)},
              run_id=new_run_id(), created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    from .report import report_paths, write_report_files

    planned = report_paths(out)
    run.extra.update(report_html=str(planned["html"]), csv=str(planned["csv"]), json=str(planned["json"]))
    store = ResultsStore(db)
    store.save_run(run)  # first: a report that cannot be written must not lose the measurements
    try:
        paths = write_report_files(run, out)
    except EdgeError as exc:
        raise ResultsError(f"{exc}; the run itself is stored as {run.run_id} in {store.path}: "
                           f"`edge report {run.run_id} -o FILE` writes it again") from exc
    return CompareResult(run=run, out_dir=out, paths=paths, steps=runner.records, db_path=store.path)


class _Runner:
    """Runs and records the steps of one compare, one backend at a time."""

    def __init__(self, steps: Steps, state: CompareState, out: Path, progress, model_key: str,
                 plan_settings: dict, bench_settings: dict):
        self.steps, self.state, self.out, self.progress = steps, state, out, progress
        self.model_key, self.plan_settings, self.bench_settings = model_key, plan_settings, bench_settings
        self.records: list[StepRecord] = []

    def _emit(self, backend: str, step: str, status: str, plan_name: str = "", seconds: float = 0.0,
              detail: str = "") -> None:
        if self.progress is not None:
            self.progress(ProgressEvent(backend, step, status, plan_name, seconds, detail))

    def _step(self, backend: str, plan_name: str, step: str, section: str, key: str, fn: Callable):
        """Return the cached value of a step, or run ``fn`` and record it."""
        cached = self.state.get(section, key)
        if cached is not None and self.steps.still_valid(section, cached):
            self.records.append(StepRecord(backend, plan_name, step, True, 0.0))
            self._emit(backend, step, "cached", plan_name)
            return cached
        self._emit(backend, step, "start", plan_name)
        start = time.perf_counter()
        try:
            value = fn()
        except BaseException as exc:
            seconds = time.perf_counter() - start
            self.records.append(StepRecord(backend, plan_name, step, False, seconds, str(exc)))
            self._emit(backend, step, "failed", plan_name, seconds, first_line(exc))
            raise
        seconds = time.perf_counter() - start
        self.state.put(section, key, value)
        self.records.append(StepRecord(backend, plan_name, step, False, seconds))
        self._emit(backend, step, "done", plan_name, seconds)
        return value

    def run_backend(self, backend: str) -> list[RunRow]:
        plan_key = key_of(self.model_key, backend, self.plan_settings)
        try:
            candidates = [Candidate.from_dict(c) for c in self._step(
                backend, "", "plan", "plans", plan_key,
                lambda: [c.to_dict() for c in self.steps.plan(backend, self.plan_settings)])]
        except Exception as exc:  # noqa: BLE001 - one backend's failure must not stop the others
            return [_error_row(backend, "-", exc)]
        return [self._run_candidate(backend, cand) for cand in candidates]

    def _run_candidate(self, backend: str, cand: Candidate) -> RunRow:
        row = cand.base_row(backend)
        try:
            export_key = key_of(self.model_key, backend, cand.plan)
            art_dir = self.out / "artifacts"
            exported = self._step(backend, cand.name, "export", "exports", export_key,
                                  lambda: self.steps.export(backend, cand, art_dir))
            cand.apply_export(row, exported)
            bench_key = key_of(exported["sha256"], self.bench_settings)
            measured = self._step(backend, cand.name, "bench", "benches", bench_key,
                                  lambda: self.steps.bench(exported["path"], self.bench_settings))
            cand.apply_bench(row, measured)
        except Exception as exc:  # noqa: BLE001 - recorded as the row's error
            err = _error_row(backend, cand.name, exc)
            row.error, row.error_type, row.exit_code = err.error, err.error_type, err.exit_code
        return row


def _error_row(backend: str, plan_name: str, exc: Exception) -> RunRow:
    if isinstance(exc, EdgeError):
        code, text = exc.exit_code, str(exc).strip()
    else:
        log.debug("unexpected failure in %s/%s", backend, plan_name, exc_info=exc)
        detail = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
        code, text = EdgeError.exit_code, f"{type(exc).__name__}: {detail} (unexpected; rerun with --debug)"
    log.warning("%s/%s failed: %s", backend, plan_name, text.splitlines()[0] if text else type(exc).__name__)
    return RunRow(backend=backend, plan_name=plan_name, error=text, error_type=type(exc).__name__,
                  exit_code=code)
