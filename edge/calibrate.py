"""Calibrate a device profile by measuring the device.

For each backend the device runs, a few synthetic *probe* models are exported with
:mod:`edge.exporter` and timed on the target with :func:`edge.bench.bench`:

==============  ===========================================  ==========================
probe           model (batch 1, fp32 unless noted)           gives
==============  ===========================================  ==========================
``overhead``    one Linear(4, 4) on a (1, 4) input            ``overhead_ms`` = p50 and
                                                              ``runtime_memory_mb`` = RSS
``matmul_fp32`` 6 x Linear(512, 512) on (64, 512): 201 MFLOP  ``matmul_gops.fp32``
``matmul_int8`` the same, int8 dynamic (edge.compress)        ``matmul_gops.int8``
``bandwidth``   Linear(4096, 4096) on (1, 4096): 64 MiB of    ``bandwidth_gbs``
                weights, 0.5 FLOP per byte
==============  ===========================================  ==========================

Throughputs subtract the fixed overhead first, so the planner's cost model
(``latency = overhead + max(flops / GOPS, bytes / bandwidth)``) reproduces each probe:
``GOPS = flops / (p50 - overhead)``, ``GB/s = bytes read / (p50 - overhead)``.

The result is the profile's ``calibration`` block (:data:`CALIBRATION_SCHEMA_VERSION`)::

    schema_version: 1
    matmul_gops: {<backend>: {fp32: GOPS, int8: GOPS}}   # achieved, not peak
    bandwidth_gbs: GB/s                  # median over backends (a device property)
    bandwidth_gbs_by_backend: {<backend>: GB/s}
    overhead_ms: {<backend>: ms}         # one inference of a trivial model
    runtime_memory_mb: {<backend>: MB}   # runner RSS with the runtime and a trivial model
    provenance: {target, transport, host, measured_at, edge_version, runtime_versions,
                 threads, cpu_count, cpu_governor, warmup, iterations, profile_source,
                 probes: {<backend>: {<probe>: {p50_ms, p90_ms, min_ms, samples, flops,
                                                bytes_read, artifact_sha256, ...}}}}

:func:`save_calibrated_profile` writes the profile with that block to
``~/.config/edge/profiles/<name>.yaml`` (where it overrides the shipped one) or a given
path, atomically.
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
from .errors import ConfigError, EdgeError
from .profiles import USER_DIR, DeviceProfile, read_yaml

log = logging.getLogger(__name__)

CALIBRATION_SCHEMA_VERSION = 1
FP32_BYTES = 4
INT8_ROW_BYTES = 8  # per-channel scale + zero point, as the cost model counts them
DEFAULT_WARMUP = 3
# p50 must exceed the overhead by this share of itself before a throughput is derived from it
MIN_NET_SHARE = 0.05


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
    def weight_params(self) -> int:
        return self.width_in * self.width_out * self.layers

    def bytes_read(self, int8: bool = False) -> float:
        """Weights at their precision plus fp32 activations in and out of each layer."""
        weights = self.weight_params + self.width_out * self.layers * INT8_ROW_BYTES if int8 \
            else self.weight_params * FP32_BYTES
        activations = self.layers * self.rows * (self.width_in + self.width_out) * FP32_BYTES
        return float(weights + activations)


def _int8_recipe() -> tuple[dict, ...]:
    from .compress import Int8DynamicConfig

    return (Int8DynamicConfig().to_dict(),)


def probes_for(backend: str) -> list[Probe]:
    """The probes timed on ``backend``, the overhead probe first."""
    return [
        Probe("overhead", rows=1, width_in=4, width_out=4, layers=1, iterations=50),
        Probe("matmul_fp32", rows=64, width_in=512, width_out=512, layers=6, iterations=20),
        Probe("matmul_int8", rows=64, width_in=512, width_out=512, layers=6, iterations=20,
              recipe=_int8_recipe(), tag="int8"),
        Probe("bandwidth", rows=1, width_in=4096, width_out=4096, layers=1, iterations=20),
    ]


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
              work_dir: str | Path | None = None, warmup: int = DEFAULT_WARMUP,
              export: Callable | None = None) -> Calibration:
    """Measure ``target`` (a name or :class:`~edge.targets.Target`) and derive its calibration.

    Every backend in ``backends`` (default: the profile's runtimes) is probed. A backend
    whose export or run fails is left out and named in ``Calibration.failures``; when every
    backend fails, the first failure is raised.
    """
    from .bench import bench
    from .exporter import export as default_export
    from .profiles import load_profile
    from .targets import Target, get_target

    tgt = target if isinstance(target, Target) else get_target(str(target), targets_file)
    profile = load_profile(tgt.profile)
    chosen = select_backends(profile, backends)
    export = export or default_export
    results: dict[str, list[ProbeResult]] = {}
    failures: dict[str, EdgeError] = {}
    with tempfile.TemporaryDirectory(prefix="edge-calibrate-") as tmp:
        out_dir = Path(work_dir).expanduser() if work_dir else Path(tmp)
        for backend in chosen:
            try:
                results[backend] = [
                    ProbeResult(backend, probe, bench(
                        _export_probe(export, probe, backend, out_dir).path, tgt, warmup=warmup,
                        iterations=probe.iterations, threads=threads, trust_new_host=trust_new_host))
                    for probe in probes_for(backend)]
            except EdgeError as exc:
                log.warning("calibration of %s on %s failed: %s", backend, tgt.name, exc)
                failures[backend] = exc
    if not results:
        raise next(iter(failures.values()))
    block = derive_calibration(results)
    block["provenance"] = provenance(tgt, profile, results, threads, warmup)
    return Calibration(profile, tgt.name, list(results), block,
                       {b: str(e) for b, e in failures.items()})


def _export_probe(export: Callable, probe: Probe, backend: str, out_dir: Path):
    plan = {"tag": probe.tag, "recipe": list(probe.recipe)} if probe.recipe else None
    log.info("calibrate: exporting probe %s for %s", probe.name, backend)
    return export(probe_spec(probe), backend, out_dir, plan=plan, validate=False)


def _throughput(amount: float, p50_ms: float, overhead_ms: float, what: str) -> float:
    """``amount`` per second in units of 1e9, over the time beyond the fixed overhead."""
    net_ms = p50_ms - overhead_ms
    if net_ms < MIN_NET_SHARE * p50_ms:
        log.warning("%s: p50 %.3f ms is hardly above the overhead %.3f ms; using %.0f%% of p50",
                    what, p50_ms, overhead_ms, MIN_NET_SHARE * 100)
        net_ms = MIN_NET_SHARE * p50_ms
    return amount / (net_ms * 1e-3) / 1e9


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def derive_calibration(results: dict[str, list[ProbeResult]]) -> dict:
    """The calibration numbers from probe timings (pure): see the module docstring."""
    gops: dict[str, dict[str, float]] = {}
    bandwidth: dict[str, float] = {}
    overhead: dict[str, float] = {}
    memory: dict[str, float] = {}
    for backend, probe_results in results.items():
        by_name = {r.probe.name: r for r in probe_results}
        base = by_name["overhead"]
        overhead[backend] = _sig(base.p50_ms)
        if base.bench.peak_rss_mb:
            memory[backend] = _sig(float(base.bench.peak_rss_mb))
        for name, r in by_name.items():
            what = f"{backend}/{name}"
            if name.startswith("matmul_"):
                value = _throughput(r.probe.flops, r.p50_ms, base.p50_ms, what)
                gops.setdefault(backend, {})[name.split("_", 1)[1]] = _sig(value)
            elif name == "bandwidth":
                value = _throughput(r.probe.bytes_read(), r.p50_ms, base.p50_ms, what)
                bandwidth[backend] = _sig(value)
    block: dict[str, Any] = {"schema_version": CALIBRATION_SCHEMA_VERSION, "matmul_gops": gops}
    if bandwidth:
        block["bandwidth_gbs"] = _sig(statistics.median(bandwidth.values()))
        block["bandwidth_gbs_by_backend"] = bandwidth
    block["overhead_ms"] = overhead
    if memory:
        block["runtime_memory_mb"] = memory
    return block


def _probe_record(r: ProbeResult) -> dict:
    lat = r.bench.latency_ms
    rec = {"p50_ms": _sig(r.p50_ms), "p90_ms": _sig(lat["p90"]) if lat.get("p90") else None,
           "min_ms": _sig(lat["min"]) if lat.get("min") else None,
           "samples": len(r.bench.latencies_ms), "flops": r.probe.flops,
           "bytes_read": r.probe.bytes_read(int8=bool(r.probe.recipe)),
           "recipe": [c["type"] for c in r.probe.recipe], "artifact_sha256": r.bench.artifact_sha256,
           "load_ms": _sig(r.bench.load_ms) if r.bench.load_ms else None,
           "peak_rss_mb": _sig(r.bench.peak_rss_mb) if r.bench.peak_rss_mb else None}
    return rec


def provenance(tgt: Any, profile: DeviceProfile, results: dict[str, list[ProbeResult]],
               threads: int | None, warmup: int) -> dict:
    """Where, when and with what the numbers were measured (plain data)."""
    first = next(iter(results.values()))[0].bench
    ctx = first.context or {}
    return {
        "target": tgt.name, "transport": tgt.transport, "host": ctx.get("hostname"),
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "edge_version": __version__,
        "runtime_versions": {b: f"{rs[0].bench.runtime} {rs[0].bench.runtime_version}"
                             for b, rs in results.items()},
        "threads": threads, "cpu_count": ctx.get("cpu_count"),
        "cpu_governor": ctx.get("cpu_governor"), "warmup": warmup,
        "iterations": {r.probe.name: r.probe.iterations for r in next(iter(results.values()))},
        "profile_source": str(profile.path) if profile.path else None,
        "probes": {b: {r.probe.name: _probe_record(r) for r in rs} for b, rs in results.items()},
    }


def calibrated_profile_data(profile: DeviceProfile, block: dict) -> dict:
    """The profile's own YAML data (``auto`` fields kept as written) with ``block`` as calibration."""
    raw = read_yaml(profile.path) if profile.path else profile.to_dict()
    if not isinstance(raw, dict):
        raise ConfigError(f"{profile.source}: expected a mapping, found {type(raw).__name__}")
    return {**raw, "calibration": block}


def default_profile_path(profile: DeviceProfile) -> Path:
    """``~/.config/edge/profiles/<name>.yaml``: found by name before the shipped profile."""
    return USER_DIR.expanduser() / f"{profile.name}.yaml"


def save_calibrated_profile(profile: DeviceProfile, block: dict, path: str | Path | None = None) -> Path:
    """Validate and write ``profile`` with ``block`` as its calibration; returns the path.

    The file is written beside its destination and renamed over it, so a reader never sees
    half a profile.
    """
    dest = Path(path).expanduser() if path else default_profile_path(profile)
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


def previous_figures(profile: DeviceProfile, backend: str) -> dict:
    """What the planner's cost model assumed for ``backend`` before this calibration."""
    from .planner.cost import device_rates

    rates = device_rates(profile, backend)
    return {"fp32_gops": rates.gops["fp32"], "int8_gops": rates.gops["int8"],
            "bandwidth_gbs": rates.bandwidth_gbs, "overhead_ms": rates.overhead_ms,
            "runtime_memory_mb": rates.runtime_memory_mb}


def measured_figures(block: dict, backend: str) -> dict:
    """The same figures as :func:`previous_figures`, from a calibration block."""
    gops = (block.get("matmul_gops") or {}).get(backend, {})
    return {"fp32_gops": gops.get("fp32"), "int8_gops": gops.get("int8"),
            "bandwidth_gbs": (block.get("bandwidth_gbs_by_backend") or {}).get(backend),
            "overhead_ms": (block.get("overhead_ms") or {}).get(backend),
            "runtime_memory_mb": (block.get("runtime_memory_mb") or {}).get(backend)}
