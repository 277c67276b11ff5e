"""Calibrate a device profile by measuring the device.

For each backend the device runs, the *probe* models of :mod:`edge.calibrate_probes` are
exported with :mod:`edge.exporter` and timed on the target with :func:`edge.benchmark.bench`,
``repeats`` times each in interleaved rounds; :mod:`edge.calibrate_derive` turns the median
timings into rates, records their spread, and refuses a calibration too noisy to trust
(:class:`~edge.errors.CalibrationNoiseError`, nothing written); :mod:`edge.calibrate_fit` scales
each latency term to fit the composite probes (whole small models). The cost model then predicts
every probe back; its mean error there (``probe_error``) and the spread give the planner
its uncertainty range (:mod:`edge.planner.uncertainty`). The ``calibration`` block::

    schema_version: 1
    matmul_gops: {<backend>: {fp32: GOPS, int8: GOPS}}   # achieved, not peak
    matmul_fixed_ms: {<backend>: {fp32: ms, int8: ms}}   # per matmul call
    matmul_curve: {<backend>: {fp32: [[flops, ms], ...]}} # ms per call by FLOPs per call
    bandwidth_gbs: GB/s                  # median over backends (a device property)
    bandwidth_gbs_by_backend: {<backend>: GB/s}
    overhead_ms: {<backend>: ms}         # one inference of a one-op model
    per_op_overhead_ms: {<backend>: ms}  # dispatch of one op
    conv_gops: {<backend>: GOPS}         # fp32 depthwise-separable convs
    conv_fixed_ms: {<backend>: ms}       # per conv call
    memory_gbs: {<backend>: GB/s}        # elementwise ops, bytes in + out
    memory_fixed_ms: {<backend>: ms}     # per elementwise op
    transcendental_gbs: {<backend>: GB/s}  # GELU, softmax, SiLU ...: bytes in + out
    pool_gbs: {<backend>: GB/s}          # max/avg pooling
    effective_cache_mb: MB               # weights one inference keeps in cache (deep matmul probe)
    stream_gbs: {<backend>: GB/s}        # the weights beyond it, streamed (where any streamed)
    decode_gbs: {<backend>: {fp32: GB/s, int8: GB/s, int4: GB/s}}  # --llm: a decode token's bytes / time
    prefill_gops: {<backend>: {fp32: GOPS, ...}}                   # --llm: a prompt's FLOPs / TTFT
    decode_layer_ms: {<backend>: ms}     # --llm: a decode step's cost per layer beyond its bytes
    fixed_cost_from: {matmul_flops, conv_flops, memory_bytes}  # per-op sizes of the small probes
    term_scale: {<backend>: {<term>: factor}}  # how the terms add up in whole models (edge.calibrate_fit)
    cache_mb: MB                         # the target's last-level cache (sysfs), when readable
    runtime_memory_mb: {<backend>: MB}   # runner RSS with the runtime imported, before a model loads
    spread: {<backend>: ratio}           # median over probes of (max - min) / median of repeats
    probe_error: {<backend>: ratio}      # mean |predicted - measured| / measured over probes
    repeats: N                           # timings per probe (median taken)
    provenance: {target, transport, host, measured_at, edge_version, runtime_versions, threads,
                 ..., load_average, notes,
                 probes: {<backend>: {<probe>: {p50_ms, p50s_ms, spread, predicted_ms, ...}}}}

:func:`save_calibrated_profile` writes the profile with it to
``~/.config/edge/profiles/<name>.yaml`` (overriding the shipped one) or a path, atomically.
"""
from __future__ import annotations

import datetime
import logging
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from . import __version__
from .calibrate_derive import (CALIBRATION_SCHEMA_VERSION, DEFAULT_MAX_SPREAD,  # noqa: F401
                               ProbeResult, check_noise, derive_calibration, probe_errors, sig)
from .calibrate_probes import (PROBE_KINDS, PROBE_NAMES, Probe, default_probes,  # noqa: F401
                               probe_spec, probes_by_backend)
from .calibrate_decode import probe_read_mb
from .calibrate_fit import fit_term_scales
from .errors import ConfigError, EdgeError
from .fileio import write_atomic
from .profiles import USER_DIR, DeviceProfile, read_yaml

log = logging.getLogger(__name__)

DEFAULT_WARMUP = 10
DEFAULT_REPEATS = 3


@dataclass
class Calibration:
    """What :func:`calibrate` measured: the new ``calibration`` block for ``profile``."""

    profile: DeviceProfile
    target: str
    backends: list[str]
    block: dict
    failures: dict[str, str] = field(default_factory=dict)  # backend -> error message

    def to_dict(self) -> dict:
        return {"profile": self.profile.name, "target": self.target, "backends": self.backends,
                "calibration": self.block, "failures": dict(self.failures)}


def select_backends(profile: DeviceProfile, requested: list[str] | None) -> list[str]:
    """Backends to calibrate: ``requested`` (checked) or every runtime of the profile."""
    from .backends import BACKENDS

    if requested is None:
        return [b for b in profile.runtimes if b in BACKENDS]
    if not requested:
        raise ConfigError("expected at least one backend in --backends, found none")
    for backend in requested:
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend '{backend}'; expected one of {', '.join(BACKENDS)}")
        if backend not in profile.runtimes:
            raise ConfigError(f"backend '{backend}' is not a runtime of profile {profile.name} "
                              f"({', '.join(profile.runtimes)}); pick --backends from those or add "
                              f"it to the profile's runtimes")
    return list(dict.fromkeys(requested))


def calibrate(target: Any, backends: list[str] | None = None, targets_file: Any = None,
              threads: int | None = None, trust_new_host: bool = False,
              probes: list[Probe] | None = None, warmup: int = DEFAULT_WARMUP,
              cache_dir: str | Path | None = None, repeats: int = DEFAULT_REPEATS,
              max_spread: float | None = DEFAULT_MAX_SPREAD, llm: bool = False,
              between_rounds: Callable[[int], None] | None = None) -> Calibration:
    """Measure ``target`` (a name or :class:`~edge.targets.Target`) and derive its calibration.

    Every backend in ``backends`` (default: the profile's runtimes) is probed with
    ``probes`` (default: :func:`default_probes`), each probe ``repeats`` times in interleaved
    rounds. A backend whose export or run fails is left out and named in
    ``Calibration.failures``; when every backend fails, the first failure is raised. A
    backend whose median probe spread exceeds ``max_spread`` (None: never) raises
    :class:`~edge.errors.CalibrationNoiseError`. ``cache_dir`` is the exporter's artifact cache.
    ``llm`` adds the decoder probes of :mod:`edge.calibrate_decode` (decode and prefill rates per
    weight type, for language-model plans) on every backend that can run them; a backend of
    language models only (llama.cpp) is calibrated by them alone, and skipped without ``llm``.
    ``probes`` may hold decoder probes (kind "decoder") too: they then replace the default ones.
    ``between_rounds(i)`` runs after round ``i`` of the probes: a benchmark measuring its own
    cases in the same rounds, so that drift on a shared host hits the probes and the cases alike.
    """
    from .profiles import load_profile
    from .targets import Target, get_target

    if threads is not None and threads < 1:
        raise ConfigError(f"expected threads >= 1 (or unset for the runtime's default), found {threads}")
    if repeats < 1 or (max_spread is not None and max_spread <= 0):
        raise ConfigError(f"expected repeats >= 1 and max_spread > 0, found {repeats} and {max_spread}")
    tgt = target if isinstance(target, Target) else get_target(str(target), targets_file)
    profile = load_profile(tgt.profile)
    cache_mb = read_cache_mb(tgt, trust_new_host)
    plan = _probe_plan(select_backends(profile, backends), probes, llm,
                       probe_read_mb(cache_mb, profile.memory.model_budget_mb))
    results, failures = _measure(plan, tgt, threads, trust_new_host, warmup, cache_dir, repeats, between_rounds)
    if not results:
        raise next(iter(failures.values()))
    block = derive_calibration(results)
    if max_spread is not None:
        check_noise(results, block, max_spread)
    if cache_mb:
        block["cache_mb"] = cache_mb
    data = calibrated_profile_data(profile, block)  # holds ``block`` itself: later keys show through
    scales = fit_term_scales(results, DeviceProfile.from_dict(data))
    if scales:
        block["term_scale"] = scales
    predicted = probe_errors(results, DeviceProfile.from_dict(data))
    block["probe_error"] = {b: sig(statistics.mean(abs(predicted[b][r.probe.name] - r.p50_ms) / r.p50_ms
                                                   for r in rs if r.probe.name in predicted.get(b, {})), 3)
                            for b, rs in results.items() if predicted.get(b)}
    block["provenance"] = provenance(tgt, profile, results, threads, warmup, predicted)
    return Calibration(profile, tgt.name, list(results), block,
                       {b: str(e) for b, e in failures.items()})


def _probe_plan(backends: list[str], probes: list[Probe] | None, llm: bool,
                read_mb: float) -> dict[str, list[Probe]]:
    """Probes per backend: the plain ones (:func:`probes_by_backend`) and, with ``llm`` or when
    ``probes`` holds some, the decoder probes each backend can express (``read_mb`` per token)."""
    from .backends import get_backend
    from .calibrate_decode import DECODE_PROBES, decoder_probes

    given = [p for p in probes if p.kind == "decoder"] if probes is not None else []
    plain = [p for p in probes if p.kind != "decoder"] if probes is not None else None
    unknown = sorted({p.name for p in given} - set(DECODE_PROBES))
    if unknown:
        raise ConfigError(f"expected decoder probes named from {', '.join(DECODE_PROBES)}, found {unknown}")
    plan = probes_by_backend(backends, plain) if plain or plain is None else {b: [] for b in backends}
    for backend in backends:
        be = get_backend(backend)
        skipped = be.calibration_skipped_probes if len(backends) > 1 else ()
        if given:
            decoders = [p for p in given if not be.unsupported({"recipe": list(p.recipe)})]
        else:
            decoders = decoder_probes(backend, read_mb) if llm else []
        plan[backend] += [p for p in decoders if p.name not in skipped]
        if not plan[backend]:
            log.info("calibrate: skipping %s: it runs language models only (pass --llm to time its "
                     "decoder probes)", backend)
            del plan[backend]
    if not plan:
        raise ConfigError(f"expected a probe to run on {', '.join(backends)}, found none: "
                          f"{'they run' if len(backends) > 1 else 'it runs'} language models only; pass --llm "
                          "to time decoder probes")
    return plan


def _measure(plan: dict[str, list[Probe]], tgt: Any, threads: int | None, trust_new_host: bool,
             warmup: int, cache_dir: Any, repeats: int, between_rounds: Callable[[int], None] | None = None):
    """Export every probe, then time them all ``repeats`` times, round by round."""
    from .benchmark import bench

    failures: dict[str, EdgeError] = {}
    timed: dict[str, list[ProbeResult]] = {}
    with tempfile.TemporaryDirectory(prefix="edge-calibrate-") as out_dir:
        paths: dict[str, list[tuple[Probe, Path]]] = {}
        for backend, backend_probes in plan.items():
            try:
                paths[backend] = [(p, export_probe(p, backend, Path(out_dir), cache_dir).path)
                                  for p in backend_probes]
            except EdgeError as exc:
                log.warning("calibration of %s on %s failed: %s", backend, tgt.name, exc)
                failures[backend] = exc
        for round_ in range(repeats):
            for backend, probes in paths.items():
                if backend in failures:
                    continue
                try:
                    for i, (probe, path) in enumerate(probes):
                        result = bench(path, tgt, warmup=warmup, iterations=probe.iterations,
                                       threads=threads, trust_new_host=trust_new_host,
                                       new_tokens=probe.decode_tokens)
                        p50 = float(result.latency_ms["p50"] or result.latency_ms["mean"])
                        ttft = ((result.generation or {}).get("ttft_ms"),) if result.generation else ()
                        if round_ == 0:
                            timed.setdefault(backend, []).append(
                                ProbeResult(backend, probe, result, (p50,), tuple(t for t in ttft if t)))
                        else:
                            r = timed[backend][i]
                            r.p50s = r.p50s + (p50,)
                            r.ttfts = r.ttfts + tuple(t for t in ttft if t)
                except EdgeError as exc:
                    log.warning("calibration of %s on %s failed: %s", backend, tgt.name, exc)
                    failures[backend] = exc
                    timed.pop(backend, None)
            if between_rounds:
                between_rounds(round_)
    return timed, failures


CACHE_SCRIPT = "cat /sys/devices/system/cpu/cpu0/cache/index*/size 2>/dev/null"


def parse_cache_mb(text: str) -> float | None:
    """The largest cache size in ``text`` (sysfs lines such as ``32K``, ``1024K``, ``32M``) in MB."""
    units = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}
    sizes = [float(line[:-1]) * units[line[-1]] for line in text.split()
             if line[-1:] in units and line[:-1].isdigit()]
    return max(sizes) if sizes else None


def read_cache_mb(tgt: Any, trust_new_host: bool = False) -> float | None:
    """The target's last-level cache in MB from sysfs, or None where it cannot be read."""
    from .transports import connect

    try:
        with connect(tgt, trust_new_host) as tr:
            return parse_cache_mb(tr.run(["sh", "-c", CACHE_SCRIPT], timeout_s=30, check=False).stdout)
    except EdgeError as exc:
        log.warning("could not read the cache size of %s: %s", tgt.name, exc)
        return None


def export_probe(probe: Probe, backend: str, out_dir: Path, cache_dir: str | Path | None):
    """``probe`` exported for ``backend`` into ``out_dir`` (through the artifact cache, unvalidated:
    a probe has random weights and nothing to agree with)."""
    from .calibrate_decode import decoder_spec
    from .exporter import export

    plan = {"tag": probe.tag, "recipe": list(probe.recipe)} if probe.recipe else None
    log.info("calibrate: exporting probe %s for %s", probe.name, backend)
    spec = decoder_spec(probe) if probe.kind == "decoder" else probe_spec(probe)
    return export(spec, backend, out_dir, plan=plan, cache_dir=cache_dir, validate=False)


def _opt(x: Any) -> float | None:
    return sig(float(x)) if x else None


def _probe_record(r: ProbeResult) -> dict:
    lat, b = r.bench.latency_ms, r.bench
    return {"p50_ms": sig(r.p50_ms), "p50s_ms": [sig(x) for x in r.p50s], "spread": sig(r.spread, 3),
            "p90_ms": _opt(lat.get("p90")), "min_ms": _opt(lat.get("min")),
            "samples": len(b.latencies_ms), "flops": r.probe.flops, "bytes_read": r.probe.bytes_read,
            "recipe": [c["type"] for c in r.probe.recipe], "artifact_sha256": b.artifact_sha256,
            "load_ms": _opt(b.load_ms), "peak_rss_mb": _opt(b.peak_rss_mb),
            **({"ttfts_ms": [sig(x) for x in r.ttfts]} if r.ttfts else {}),
            **({"new_tokens": b.generation.get("new_tokens")} if b.generation else {})}


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def provenance(tgt: Any, profile: DeviceProfile, results: dict[str, list[ProbeResult]],
               threads: int | None, warmup: int, predicted: dict | None = None) -> dict:
    """Where, when and with what the numbers were measured (plain data), raw p50s included;
    ``predicted``: the cost model's ms per backend and probe (with the new calibration)."""
    ctx = next(iter(results.values()))[0].bench.context or {}
    notes = [f"{b}: no {name} probe (the backend's calibration_skipped_probes)" for b, rs in results.items()
              for name in PROBE_NAMES if name not in {r.probe.name for r in rs}]
    return {
        "target": tgt.name, "transport": tgt.transport, "host": ctx.get("hostname"),
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "edge_version": __version__,
        "runtime_versions": {b: f"{rs[0].bench.runtime} {rs[0].bench.runtime_version}"
                             for b, rs in results.items()},
        "threads": threads, "cpu_count": ctx.get("cpu_count"), "cpu_governor": ctx.get("cpu_governor"),
        "warmup": warmup, "statistic": "median over repeats of p50",
        "host_load_average": _load_average() if tgt.transport == "local" else None,
        "profile_source": str(profile.path) if profile.path else None,
        "notes": notes,
        "probes": {b: {r.probe.name: {**_probe_record(r), "predicted_ms": _opt(
            (predicted or {}).get(b, {}).get(r.probe.name))} for r in rs} for b, rs in results.items()},
    }


def calibrated_profile_data(profile: DeviceProfile, block: dict) -> dict:
    """The profile's own YAML data (``auto`` fields kept as written) with ``block`` as calibration."""
    raw = read_yaml(profile.path) if profile.path else profile.to_dict()
    if not isinstance(raw, dict):
        raise ConfigError(f"{profile.source}: expected a mapping, found {type(raw).__name__}")
    return {**raw, "calibration": block}


def save_calibrated_profile(profile: DeviceProfile, block: dict, path: str | Path | None = None) -> Path:
    """Validate and write ``profile`` with ``block`` as its calibration (default path:
    ``~/.config/edge/profiles/<name>.yaml``); written beside it and renamed over it."""
    dest = Path(path or USER_DIR / f"{profile.name}.yaml").expanduser()
    if dest.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"expected a profile path ending in .yaml or .yml, found {dest}")
    data = calibrated_profile_data(profile, block)
    DeviceProfile.from_dict(data, source=str(dest), path=dest)  # refuse to write an invalid file
    header = (f"# {profile.name}, calibrated on target {block.get('provenance', {}).get('target')} "
              f"at {block.get('provenance', {}).get('measured_at')} (edge profiles calibrate)\n")
    text = header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dest, text)
    except OSError as exc:
        raise ConfigError(f"cannot write the calibrated profile to {dest}: {exc.strerror}; "
                          "pass a writable path with -o") from None
    log.info("wrote calibrated profile %s", dest)
    return dest


FIGURES = (("fp32_gops", "GOPS"), ("int8_gops", "GOPS"), ("bandwidth_gbs", "GB/s"),
           ("overhead_ms", "ms"), ("per_op_overhead_ms", "ms"), ("fp32_matmul_fixed_ms", "ms"),
           ("int8_matmul_fixed_ms", "ms"), ("conv_gops", "GOPS"), ("memory_gbs", "GB/s"),
           ("runtime_memory_mb", "MB"))


def compare_figures(profile: DeviceProfile, block: dict) -> list[dict]:
    """Per backend and figure: what the planner's cost model assumed with ``profile`` before
    (``before``) and what ``block`` measured (``measured``, None where not measured)."""
    from .planner.cost import device_rates

    rows = []
    for backend, overhead_ms in block["overhead_ms"].items():
        rates = device_rates(profile, backend)
        gops = block["matmul_gops"].get(backend, {})
        fixed = block.get("matmul_fixed_ms", {}).get(backend, {})
        before = {"fp32_gops": rates.gops["fp32"], "int8_gops": rates.gops["int8"],
                  "bandwidth_gbs": rates.bandwidth_gbs, "overhead_ms": rates.overhead_ms,
                  "per_op_overhead_ms": rates.per_op_overhead_ms,
                  "fp32_matmul_fixed_ms": rates.fixed_ms.get("matmul_fp32", 0.0),
                  "int8_matmul_fixed_ms": rates.fixed_ms.get("matmul_int8", 0.0),
                  "conv_gops": rates.gops_for("conv", "fp32"),
                  "memory_gbs": rates.memory_gbs or rates.bandwidth_gbs,
                  "runtime_memory_mb": rates.runtime_memory_mb}
        measured = {"fp32_gops": gops.get("fp32"), "int8_gops": gops.get("int8"),
                    "bandwidth_gbs": block.get("bandwidth_gbs_by_backend", {}).get(backend),
                    "overhead_ms": overhead_ms, "fp32_matmul_fixed_ms": fixed.get("fp32"),
                    "int8_matmul_fixed_ms": fixed.get("int8"),
                    **{k: block.get(k, {}).get(backend) for k in
                       ("per_op_overhead_ms", "conv_gops", "memory_gbs", "runtime_memory_mb")}}
        rows += [{"backend": backend, "figure": name, "unit": unit, "before": before[name],
                  "measured": measured[name]} for name, unit in FIGURES]
    return rows
