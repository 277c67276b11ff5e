"""Calibrate a device profile by measuring the device.

For each backend the device runs, a few synthetic *probe* models are exported with
:mod:`edge.exporter` and timed on the target with :func:`edge.bench.bench`:

=============== ============================================ ==============================
probe           model (fp32 unless noted)                     gives
=============== ============================================ ==============================
``overhead``    one Linear(4, 4) on a (1, 4) input            ``overhead_ms`` (p50),
                                                              ``runtime_memory_mb`` (RSS)
``dispatch``    16 x Linear(4, 4)                             ``per_module_overhead_ms``
``matmul_fp32`` 6 x Linear(512, 512) on (64, 512): 201 MFLOP  ``matmul_gops.fp32``
``matmul_int8`` the same, int8 dynamic (edge.compress)        ``matmul_gops.int8``
``bandwidth``   Linear(4096, 4096) on (1, 4096): 64 MiB       ``bandwidth_gbs``
=============== ============================================ ==============================

The fixed costs are subtracted first, so the planner's cost model (``latency = overhead +
modules x per_module + max(flops / GOPS, bytes / bandwidth)``) reproduces each probe:
``per_module = (p50_dispatch - p50_overhead) / 15``, ``GOPS = flops / (p50 - fixed)``,
``GB/s = bytes read / (p50 - fixed)``. The result is the profile's ``calibration`` block::

    schema_version: 1
    matmul_gops: {<backend>: {fp32: GOPS, int8: GOPS}}   # achieved, not peak
    bandwidth_gbs: GB/s                  # median over backends (a device property)
    bandwidth_gbs_by_backend: {<backend>: GB/s}
    overhead_ms: {<backend>: ms}         # one inference of a one-op model
    per_module_overhead_ms: {<backend>: ms}
    runtime_memory_mb: {<backend>: MB}   # runner RSS with the runtime and a one-op model
    provenance: {target, transport, host, measured_at, edge_version, runtime_versions, threads,
                 ..., notes, probes: {<backend>: {<probe>: {p50_ms, p90_ms, min_ms, flops, ...}}}}

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
from typing import Any

import yaml

from . import __version__
from .errors import ConfigError, EdgeError
from .profiles import USER_DIR, DeviceProfile, read_yaml

log = logging.getLogger(__name__)

CALIBRATION_SCHEMA_VERSION = 1
PROBE_NAMES = ("overhead", "dispatch", "matmul_fp32", "matmul_int8", "bandwidth")
# tflite skips these beside another backend: a device property, or small there (XNNPACK runs
# the whole graph as one delegate node), and each onnx2tf conversion costs ~15 s (minutes at 64 MiB)
TFLITE_SKIPPED = ("dispatch", "bandwidth")
FP32_BYTES = 4
INT8_ROW_BYTES = 8  # per-channel scale + zero point, as the cost model counts them
DEFAULT_WARMUP = 3
MIN_NET_SHARE = 0.05  # p50 - fixed costs is taken as at least this share of p50
# Transports whose runner cannot report its own peak RSS (none since the runner reads VmHWM).
RSS_INHERITED_TRANSPORTS: tuple[str, ...] = ()


@dataclass(frozen=True)
class Probe:
    """One synthetic model and what its timing measures.

    ``rows`` x ``width_in`` input through ``layers`` Linear(width_in, width_out) layers
    (square when stacked). ``recipe`` holds technique configs as dicts (empty = fp32).
    """

    name: str
    rows: int
    width_in: int
    width_out: int
    layers: int
    iterations: int
    recipe: tuple[dict, ...] = ()
    tag: str | None = None  # artifact folder suffix

    @property
    def flops(self) -> float:
        return 2.0 * self.rows * self.width_in * self.width_out * self.layers

    @property
    def bytes_read(self) -> float:
        """Weights at their precision plus fp32 activations in and out of each layer."""
        params = self.width_in * self.width_out * self.layers
        weights = params + self.width_out * self.layers * INT8_ROW_BYTES if self.recipe \
            else params * FP32_BYTES
        activations = self.layers * self.rows * (self.width_in + self.width_out) * FP32_BYTES
        return float(weights + activations)


def default_probes() -> list[Probe]:
    """The probes of the module docstring, the overhead probe first."""
    from .compress import Int8DynamicConfig

    return [
        Probe("overhead", rows=1, width_in=4, width_out=4, layers=1, iterations=50),
        Probe("dispatch", rows=1, width_in=4, width_out=4, layers=16, iterations=50),
        Probe("matmul_fp32", rows=64, width_in=512, width_out=512, layers=6, iterations=20),
        Probe("matmul_int8", rows=64, width_in=512, width_out=512, layers=6, iterations=20,
              recipe=(Int8DynamicConfig().to_dict(),), tag="int8"),
        Probe("bandwidth", rows=1, width_in=4096, width_out=4096, layers=1, iterations=20),
    ]


def probes_by_backend(backends: list[str], probes: list[Probe] | None = None) -> dict[str, list[Probe]]:
    """Which probes run on which backend.

    tflite skips :data:`TFLITE_SKIPPED` when another backend is calibrated with it.
    """
    probes = list(probes) if probes is not None else default_probes()
    names = [p.name for p in probes]
    unknown = sorted(set(names) - set(PROBE_NAMES))
    if unknown or "overhead" not in names or len(set(names)) != len(names):
        raise ConfigError(f"expected distinct probes named from {', '.join(PROBE_NAMES)} including "
                          f"'overhead', found {names}")
    out = {}
    for backend in backends:
        skip = backend == "tflite" and len(backends) > 1
        out[backend] = [p for p in probes if not (skip and p.name in TFLITE_SKIPPED)]
    return out


def probe_spec(probe: Probe):
    """The probe as a ModelSpec (deterministic weights, so the export cache can reuse it)."""
    import torch

    from .models.loaders import spec_from_factory_result

    class LinearStack(torch.nn.Module):
        """``layers`` bias-free Linear layers applied in sequence to a 2-D input."""

        def __init__(self, width_in: int, width_out: int, layers: int):
            super().__init__()
            gen = torch.Generator().manual_seed(0)
            self.layers = torch.nn.Sequential(*[torch.nn.Linear(width_in, width_out, bias=False)
                                                for _ in range(layers)])
            for layer in self.layers:  # unit-variance activations through the stack
                layer.weight.data = torch.randn(layer.weight.shape, generator=gen) / width_in ** 0.5

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (rows, width_in) -> (rows, width_out)
            return self.layers(x)

    with torch.no_grad():
        model = LinearStack(probe.width_in, probe.width_out, probe.layers).eval()
        x = torch.randn((probe.rows, probe.width_in), generator=torch.Generator().manual_seed(1))
    return spec_from_factory_result((model, (x,)), name=f"calibrate-{probe.name}",
                                    where="edge.calibrate")


@dataclass
class ProbeResult:
    """One probe timed on one backend (latencies in ms)."""

    backend: str
    probe: Probe
    bench: Any  # edge.bench.BenchResult

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
    from .bench import bench
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
    block = derive_calibration(results, rss_valid=tgt.transport not in RSS_INHERITED_TRANSPORTS)
    block["provenance"] = provenance(tgt, profile, results, threads, warmup)
    return Calibration(profile, tgt.name, list(results), block,
                       {b: str(e) for b, e in failures.items()})


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


def _derive_backend(by_name: dict[str, ProbeResult], rss_valid: bool) -> dict[str, Any]:
    base = by_name["overhead"]
    out: dict[str, Any] = {"overhead_ms": base.p50_ms, "matmul_gops": {}}
    per_module_ms = 0.0
    if "dispatch" in by_name:
        extra = by_name["dispatch"].probe.layers - base.probe.layers
        per_module_ms = max(0.0, (by_name["dispatch"].p50_ms - base.p50_ms) / extra)
        out["per_module_overhead_ms"] = per_module_ms
    if rss_valid and base.bench.peak_rss_mb:
        out["runtime_memory_mb"] = float(base.bench.peak_rss_mb)
    for name, r in by_name.items():
        fixed_ms = base.p50_ms + r.probe.layers * per_module_ms
        if name.startswith("matmul_"):
            out["matmul_gops"][name.split("_", 1)[1]] = _throughput(r.probe.flops, r, fixed_ms)
        elif name == "bandwidth":
            out["bandwidth_gbs"] = _throughput(r.probe.bytes_read, r, fixed_ms)
    return out


def derive_calibration(results: dict[str, list[ProbeResult]], rss_valid: bool = True) -> dict:
    """The calibration numbers from probe timings (pure): see the module docstring.

    ``rss_valid`` False leaves out ``runtime_memory_mb`` (see :data:`RSS_INHERITED_TRANSPORTS`).
    """
    per = {b: _derive_backend({r.probe.name: r for r in rs}, rss_valid) for b, rs in results.items()}
    block: dict[str, Any] = {
        "schema_version": CALIBRATION_SCHEMA_VERSION,
        "matmul_gops": {b: {k: _sig(v) for k, v in d["matmul_gops"].items()} for b, d in per.items()}}
    bandwidth = {b: _sig(d["bandwidth_gbs"]) for b, d in per.items() if "bandwidth_gbs" in d}
    if bandwidth:
        block["bandwidth_gbs"] = _sig(statistics.median(bandwidth.values()))
        block["bandwidth_gbs_by_backend"] = bandwidth
    for key in ("overhead_ms", "per_module_overhead_ms", "runtime_memory_mb"):
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
    notes = []
    if tgt.transport in RSS_INHERITED_TRANSPORTS:
        notes.append(f"runtime_memory_mb not recorded: on the {tgt.transport} transport the runner's "
                     "peak RSS includes the RSS of the process that started it")
    notes += [f"{b}: no {name} probe (see edge.calibrate.TFLITE_SKIPPED)" for b, rs in results.items()
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
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write the calibrated profile to {dest}: {exc.strerror}; "
                          "pass a writable path with -o") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("wrote calibrated profile %s", dest)
    return dest


FIGURES = (("fp32_gops", "GOPS"), ("int8_gops", "GOPS"), ("bandwidth_gbs", "GB/s"),
           ("overhead_ms", "ms"), ("per_module_overhead_ms", "ms"), ("runtime_memory_mb", "MB"))


def compare_figures(profile: DeviceProfile, block: dict) -> list[dict]:
    """Per backend and figure: what the planner's cost model assumed with ``profile`` before
    (``before``) and what ``block`` measured (``measured``, None where not measured)."""
    from .planner.cost import PER_MODULE_OVERHEAD_MS, device_rates

    rows = []
    for backend, overhead_ms in block["overhead_ms"].items():
        rates = device_rates(profile, backend)
        gops = block["matmul_gops"].get(backend, {})
        before = {"fp32_gops": rates.gops["fp32"], "int8_gops": rates.gops["int8"],
                  "bandwidth_gbs": rates.bandwidth_gbs, "overhead_ms": rates.overhead_ms,
                  "per_module_overhead_ms": PER_MODULE_OVERHEAD_MS[backend],
                  "runtime_memory_mb": rates.runtime_memory_mb}
        measured = {"fp32_gops": gops.get("fp32"), "int8_gops": gops.get("int8"),
                    "bandwidth_gbs": block.get("bandwidth_gbs_by_backend", {}).get(backend),
                    "overhead_ms": overhead_ms,
                    "per_module_overhead_ms": block.get("per_module_overhead_ms", {}).get(backend),
                    "runtime_memory_mb": block.get("runtime_memory_mb", {}).get(backend)}
        rows += [{"backend": backend, "figure": name, "unit": unit, "before": before[name],
                  "measured": measured[name]} for name, unit in FIGURES]
    return rows
