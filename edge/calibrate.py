"""Calibrate a device profile by measuring the device.

For each backend the device runs, the *probe* models of :mod:`edge.calibrate_probes` are
exported with :mod:`edge.exporter` and timed on the target with :func:`edge.benchmark.bench`.

Fixed costs are subtracted first, so the cost model (:mod:`edge.planner.cost`) reproduces
each probe: ``per_op = (p50_dispatch - p50_overhead) / 15``; a matmul layer (conv, elementwise
op) takes ``fixed + flops / GOPS`` (``bytes / GB/s``), solved from the big and the small probe
(without the small one, ``fixed`` is 0). The result is the profile's ``calibration`` block::

    schema_version: 1
    matmul_gops: {<backend>: {fp32: GOPS, int8: GOPS}}   # achieved, not peak
    matmul_fixed_ms: {<backend>: {fp32: ms, int8: ms}}   # per matmul call
    bandwidth_gbs: GB/s                  # median over backends (a device property)
    bandwidth_gbs_by_backend: {<backend>: GB/s}
    overhead_ms: {<backend>: ms}         # one inference of a one-op model
    per_op_overhead_ms: {<backend>: ms}  # dispatch of one op
    conv_gops: {<backend>: GOPS}         # fp32 depthwise-separable convs
    conv_fixed_ms: {<backend>: ms}       # per conv call
    memory_gbs: {<backend>: GB/s}        # elementwise ops, bytes in + out
    memory_fixed_ms: {<backend>: ms}     # per elementwise op
    fixed_cost_from: {matmul_flops, conv_flops, memory_bytes}  # per-op sizes of the small probes
    cache_mb: MB                         # the target's last-level cache (sysfs), when readable
    runtime_memory_mb: {<backend>: MB}   # runner RSS with the runtime and a one-op model
    provenance: {target, transport, host, measured_at, edge_version, runtime_versions, threads,
                 ..., notes, probes: {<backend>: {<probe>: {p50_ms, p90_ms, min_ms, flops, ...}}}}

:func:`save_calibrated_profile` writes the profile with it to
``~/.config/edge/profiles/<name>.yaml`` (overriding the shipped one) or a path, atomically.
"""
from __future__ import annotations

import datetime
import logging
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from .calibrate_probes import (PROBE_KINDS, PROBE_NAMES, Probe, default_probes,  # noqa: F401
                               probe_spec, probes_by_backend)
from .errors import ConfigError, EdgeError
from .fileio import write_atomic
from .profiles import USER_DIR, DeviceProfile, read_yaml

log = logging.getLogger(__name__)

CALIBRATION_SCHEMA_VERSION = 1
DEFAULT_WARMUP = 10
MIN_NET_SHARE = 0.05  # p50 - fixed costs is taken as at least this share of p50


@dataclass
class ProbeResult:
    """One probe timed on one backend (latencies in ms)."""

    backend: str
    probe: Probe
    bench: Any  # edge.benchmark.BenchResult

    @property
    def p50_ms(self) -> float:
        return float(self.bench.latency_ms["p50"] or self.bench.latency_ms["mean"])


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
              cache_dir: str | Path | None = None) -> Calibration:
    """Measure ``target`` (a name or :class:`~edge.targets.Target`) and derive its calibration.

    Every backend in ``backends`` (default: the profile's runtimes) is probed with
    ``probes`` (default: :func:`default_probes`). A backend whose export or run fails is
    left out and named in ``Calibration.failures``; when every backend fails, the first
    failure is raised. ``cache_dir`` is the exporter's artifact cache (default its own).
    """
    from .benchmark import bench
    from .profiles import load_profile
    from .targets import Target, get_target

    if threads is not None and threads < 1:
        raise ConfigError(f"expected threads >= 1 (or unset for the runtime's default), found {threads}")
    tgt = target if isinstance(target, Target) else get_target(str(target), targets_file)
    profile = load_profile(tgt.profile)
    plan = probes_by_backend(select_backends(profile, backends), probes)
    results: dict[str, list[ProbeResult]] = {}
    failures: dict[str, EdgeError] = {}
    with tempfile.TemporaryDirectory(prefix="edge-calibrate-") as out_dir:
        for backend, backend_probes in plan.items():
            try:
                results[backend] = [
                    ProbeResult(backend, probe, bench(
                        _export_probe(probe, backend, Path(out_dir), cache_dir).path, tgt,
                        warmup=warmup, iterations=probe.iterations, threads=threads,
                        trust_new_host=trust_new_host))
                    for probe in backend_probes]
            except EdgeError as exc:
                log.warning("calibration of %s on %s failed: %s", backend, tgt.name, exc)
                failures[backend] = exc
    if not results:
        raise next(iter(failures.values()))
    block = derive_calibration(results)
    cache_mb = read_cache_mb(tgt, trust_new_host)
    if cache_mb:
        block["cache_mb"] = cache_mb
    block["provenance"] = provenance(tgt, profile, results, threads, warmup)
    return Calibration(profile, tgt.name, list(results), block,
                       {b: str(e) for b, e in failures.items()})


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


def _export_probe(probe: Probe, backend: str, out_dir: Path, cache_dir: str | Path | None):
    from .exporter import export

    plan = {"tag": probe.tag, "recipe": list(probe.recipe)} if probe.recipe else None
    log.info("calibrate: exporting probe %s for %s", probe.name, backend)
    return export(probe_spec(probe), backend, out_dir, plan=plan, cache_dir=cache_dir, validate=False)


def _throughput(amount: float, r: ProbeResult, fixed_ms: float) -> float:
    """``amount`` per second in units of 1e9, over the time beyond ``fixed_ms``."""
    net_ms = r.p50_ms - fixed_ms
    if net_ms < MIN_NET_SHARE * r.p50_ms:
        log.warning("%s/%s: p50 %.4f ms is hardly above the fixed overhead %.4f ms; using %.0f%% "
                    "of p50", r.backend, r.probe.name, r.p50_ms, fixed_ms, MIN_NET_SHARE * 100)
        net_ms = MIN_NET_SHARE * r.p50_ms
    return amount / (net_ms * 1e-3) / 1e9


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def _fit(big: ProbeResult, small: ProbeResult | None, amount: str, base_ms: float,
         per_op_ms: float) -> tuple[float, float]:
    """(throughput in units of 1e9 per s, fixed ms per op) of one op class: an op of the probes
    takes ``fixed + amount / throughput``, solved from two sizes (one size: fixed 0)."""
    fixed = 0.0
    if small is not None:
        net, per_op = {}, {}
        for r in (big, small):
            net[r.probe.name] = (r.p50_ms - base_ms - r.probe.ops * per_op_ms) / r.probe.ops
            per_op[r.probe.name] = getattr(r.probe, amount) / r.probe.ops
        (net_big, net_small), (size_big, size_small) = net.values(), per_op.values()
        if net_big > net_small > 0 and size_big > size_small:
            fixed = max(0.0, net_small - size_small * (net_big - net_small) / (size_big - size_small))
        else:
            log.warning("%s/%s: the small probe is not faster per op than the big one; no fixed cost "
                        "derived", big.backend, small.probe.name)
    rate = _throughput(getattr(big.probe, amount), big, base_ms + big.probe.ops * (per_op_ms + fixed))
    return rate, fixed


OP_CLASSES = {  # calibration keys <- (big probe, small probe, amount)
    ("matmul_gops", "fp32"): ("matmul_fp32", "matmul_fp32_small", "flops"),
    ("matmul_gops", "int8"): ("matmul_int8", "matmul_int8_small", "flops"),
    ("conv_gops", None): ("conv", "conv_small", "flops"),
    ("memory_gbs", None): ("elementwise", "elementwise_small", "bytes_read"),
}


def _derive_backend(by_name: dict[str, ProbeResult]) -> dict[str, Any]:
    base = by_name["overhead"]
    out: dict[str, Any] = {"overhead_ms": base.p50_ms, "matmul_gops": {}, "matmul_fixed_ms": {}}
    per_op_ms = 0.0
    if "dispatch" in by_name:
        extra = by_name["dispatch"].probe.ops - base.probe.ops
        per_op_ms = max(0.0, (by_name["dispatch"].p50_ms - base.p50_ms) / extra)
        out["per_op_overhead_ms"] = per_op_ms
    if base.bench.peak_rss_mb:
        out["runtime_memory_mb"] = float(base.bench.peak_rss_mb)
    for (key, dtype), (big, small, amount) in OP_CLASSES.items():
        if big in by_name:
            rate, fixed = _fit(by_name[big], by_name.get(small), amount, base.p50_ms, per_op_ms)
            if dtype:
                out[key][dtype] = rate
                if small in by_name:  # else the cost model falls back to the fp32 fixed cost
                    out["matmul_fixed_ms"][dtype] = fixed
            elif small in by_name:
                out[key], out[key.split("_")[0] + "_fixed_ms"] = rate, fixed
            else:
                out[key] = rate
    if "bandwidth" in by_name:
        r = by_name["bandwidth"]
        fixed_ms = base.p50_ms + r.probe.ops * (per_op_ms + out["matmul_fixed_ms"].get("fp32", 0.0))
        out["bandwidth_gbs"] = _throughput(r.probe.bytes_read, r, fixed_ms)
    if not out["matmul_fixed_ms"]:
        del out["matmul_fixed_ms"]
    return out


def fixed_cost_from(probes: list[Probe]) -> dict[str, float]:
    """Per-op sizes of the small probes: ops at least this large pay their class's fixed cost
    in full, smaller ones a proportional share (see :mod:`edge.planner.cost`)."""
    by_name = {p.name: p for p in probes}
    out = {}
    for key, name, amount in (("matmul_flops", "matmul_fp32_small", "flops"),
                              ("conv_flops", "conv_small", "flops"),
                              ("memory_bytes", "elementwise_small", "bytes_read")):
        if name in by_name:
            out[key] = getattr(by_name[name], amount) / by_name[name].ops
    return out


def derive_calibration(results: dict[str, list[ProbeResult]]) -> dict:
    """The calibration numbers from probe timings (pure): see the module docstring."""
    per = {b: _derive_backend({r.probe.name: r for r in rs}) for b, rs in results.items()}
    block: dict[str, Any] = {
        "schema_version": CALIBRATION_SCHEMA_VERSION,
        "matmul_gops": {b: {k: _sig(v) for k, v in d["matmul_gops"].items()} for b, d in per.items()}}
    bandwidth = {b: _sig(d["bandwidth_gbs"]) for b, d in per.items() if "bandwidth_gbs" in d}
    if bandwidth:
        block["bandwidth_gbs"] = _sig(statistics.median(bandwidth.values()))
        block["bandwidth_gbs_by_backend"] = bandwidth
    fixed = {b: {k: _sig(v) for k, v in d["matmul_fixed_ms"].items()} for b, d in per.items()
             if "matmul_fixed_ms" in d}
    if fixed:
        block["matmul_fixed_ms"] = fixed
    sizes = fixed_cost_from([r.probe for rs in results.values() for r in rs])
    if sizes:
        block["fixed_cost_from"] = sizes
    for key in ("overhead_ms", "per_op_overhead_ms", "conv_gops", "conv_fixed_ms", "memory_gbs",
                "memory_fixed_ms", "runtime_memory_mb"):
        values = {b: _sig(d[key]) for b, d in per.items() if key in d}
        if values:
            block[key] = values
    return block


def _opt(x: Any) -> float | None:
    return _sig(float(x)) if x else None


def _probe_record(r: ProbeResult) -> dict:
    lat, b = r.bench.latency_ms, r.bench
    return {"p50_ms": _sig(r.p50_ms), "p90_ms": _opt(lat.get("p90")), "min_ms": _opt(lat.get("min")),
            "samples": len(b.latencies_ms), "flops": r.probe.flops, "bytes_read": r.probe.bytes_read,
            "recipe": [c["type"] for c in r.probe.recipe], "artifact_sha256": b.artifact_sha256,
            "load_ms": _opt(b.load_ms), "peak_rss_mb": _opt(b.peak_rss_mb)}


def provenance(tgt: Any, profile: DeviceProfile, results: dict[str, list[ProbeResult]],
               threads: int | None, warmup: int) -> dict:
    """Where, when and with what the numbers were measured (plain data), raw p50s included."""
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
        "warmup": warmup, "statistic": "p50", "profile_source": str(profile.path) if profile.path else None,
        "notes": notes,
        "probes": {b: {r.probe.name: _probe_record(r) for r in rs} for b, rs in results.items()},
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
