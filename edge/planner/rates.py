"""What a backend achieves on a device: matmul throughput per dtype, bandwidth, overheads and
the cache, from the device profile (peaks, datasheet or derived) and the backend's cost traits,
with whatever ``profile.calibration`` measured taking precedence. See :mod:`edge.planner.cost`
for how the cost model uses them and for the calibration keys.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only
    from ..profiles import DeviceProfile

MB = 1024 * 1024
# Share of the last-level cache weights can keep (activations, the runtime, neighbours use the rest).
CACHE_SHARE = 0.5
# Largest weight matrix the calibration's matmul curve probes read per call (the wide probe's 384 x
# 1536 fp32): a bigger one is bounded by the bandwidth, not by the curve.
CURVE_WEIGHT_BYTES = 384 * 1536 * 4
# Depthwise/pointwise convs on small maps reach a fraction of the matmul throughput.
CONV_EFFICIENCY = 0.25
DEFAULT_BANDWIDTH_GBS = 2.0
# fp32 peak of the core the backends' overhead traits describe: Cortex-A72 @ 1.8 GHz, one 128-bit
# NEON FMA pipe = 1.8 x 4 lanes x 2 (the arithmetic of the Pi profiles' fp32_gflops notes)
REFERENCE_CORE_GFLOPS = 14.4
# int8 throughput relative to fp32 when the profile gives none: SDOT/SMMLA vs NEON widening.
INT8_SPEEDUP_DOTPROD = 4.0
INT8_SPEEDUP_NEON = 1.5


@dataclass(frozen=True)
class DeviceRates:
    """Throughputs a backend achieves on a device, in GOPS and GB/s."""

    gops: dict[str, float]
    bandwidth_gbs: float
    has_fp16: bool
    overhead_ms: float
    runtime_memory_mb: float
    per_op_overhead_ms: float = 0.0
    # fixed cost per call of "matmul_<dtype>", "conv", "memory" ops, and the per-op size
    # ("matmul"/"conv": FLOPs, "memory": bytes) from which it is paid in full
    fixed_ms: dict[str, float] = field(default_factory=dict)
    fixed_from: dict[str, float] = field(default_factory=dict)
    conv_gops: float | None = None  # fp32 convolution throughput
    memory_gbs: float | None = None  # throughput of elementwise/norm/softmax ops (bytes in + out)
    transcendental_gbs: float | None = None  # of GELU/softmax/SiLU ...; None: memory_gbs
    pool_gbs: float | None = None  # of max/avg pooling; None: memory_gbs
    cache_mb: float | None = None  # last-level cache; None: weights assumed cache-resident
    notes: tuple[str, ...] = ()
    # compute dtype -> [[FLOPs per call, ms per call], ...] ascending (calibration's matmul_curve)
    matmul_curve: dict[str, list] = field(default_factory=dict)
    # cache_mb is what the calibration measured weights to stay in (all of it usable), not the
    # reported last-level cache (of which CACHE_SHARE is)
    cache_is_effective: bool = False
    stream_gbs: float | None = None  # weights beyond the cache, as measured; None: bandwidth_gbs
    # language models, from decoder probes (edge.calibrate_decode): weight type -> decode GB/s, prefill GOPS
    decode_gbs: dict[str, float] = field(default_factory=dict)
    overhead_measured: bool = False  # overhead_ms from calibration, not the backend's trait
    prefill_gops: dict[str, float] = field(default_factory=dict)
    decode_layer_ms: float = 0.0  # a decode step's cost per layer beyond its bytes (decode_layers probe)

    @property
    def cache_bytes(self) -> float | None:
        """Weight bytes one inference can read from cache; None: unknown (everything fits)."""
        if self.cache_mb is None:
            return None
        return self.cache_mb * MB * (1.0 if self.cache_is_effective else CACHE_SHARE)

    def curve_ms(self, dtype: str, calls: float, flops_per_call: float) -> float | None:
        """ms for ``calls`` matmuls of ``flops_per_call`` each from the measured curve, or None."""
        points = self.matmul_curve.get(dtype)
        if not points or calls <= 0:
            return None
        return calls * interpolate_curve(points, flops_per_call)

    def call_ms(self, kind: str, calls: float, size_per_call: float) -> float:
        """Fixed cost of ``calls`` ops of ``kind`` ("matmul_fp32", "conv", "memory" ...)."""
        fallback = self.fixed_ms.get("matmul_fp32", 0.0) if kind.startswith("matmul") else 0.0
        fixed = self.fixed_ms.get(kind, fallback)
        start = self.fixed_from.get(kind.split("_")[0])
        share = min(1.0, size_per_call / start) if start else 1.0
        return calls * fixed * share

    def gops_for(self, group: str, dtype: str) -> float:
        """Throughput of ``group``'s multiplies at ``dtype`` (convs scale the conv rate)."""
        if group == "conv":  # int8 weights on a conv run the fp32 kernel (dynamic/hybrid)
            conv = self.conv_gops or self.gops["fp32"] * CONV_EFFICIENCY
            return conv * self.gops[dtype] / self.gops["fp32"] if dtype == "fp16" else conv
        return self.gops[dtype]


def interpolate_curve(points: list, x: float) -> float:
    """y at ``x`` on [[x, y], ...] (ascending x, y > 0): log-log between points, proportional
    (y / x constant) beyond either end."""
    (x0, y0), (xn, yn) = points[0], points[-1]
    if x <= x0:
        return y0 * x / x0
    if x >= xn:
        return yn * x / xn
    for (xa, ya), (xb, yb) in zip(points, points[1:]):
        if xa <= x <= xb:
            t = math.log(x / xa) / math.log(xb / xa)
            return math.exp(math.log(ya) + t * (math.log(yb) - math.log(ya)))
    raise AssertionError("unreachable: x lies within the points")


def core_speedup(profile: DeviceProfile, fp32_gflops: float) -> float:
    """How much faster one core is than the core the backends' overhead traits assume (a
    Cortex-A72 at 1.8 GHz: REFERENCE_CORE_GFLOPS), by fp32 peak per core; at least 1 (a slower
    core keeps the traits, which are already conservative). Dispatch and per-inference overheads
    are CPU work, so they shrink on a faster core."""
    return max(1.0, fp32_gflops / max(profile.cpu.cores or 1, 1) / REFERENCE_CORE_GFLOPS)


def _peak(profile: DeviceProfile, attr: str) -> float | None:
    peak = getattr(profile.compute, attr, None)
    return None if peak is None else peak.value


def device_rates(profile: DeviceProfile, backend: str) -> DeviceRates:
    """Achieved matmul throughput per dtype, bandwidth and overheads for ``backend`` on ``profile``."""
    notes = []
    cal = profile.calibration or {}
    isa = set(profile.cpu.isa or ())
    fp32 = _peak(profile, "fp32_gflops")
    if fp32 is None:
        cores, ghz = profile.cpu.cores or 1, profile.cpu.max_clock_ghz or 1.0
        fp32 = cores * ghz * 8.0
        notes.append(f"fp32 peak unknown; assumed {fp32:g} GFLOPS (cores x GHz x 8)")
    int8 = _peak(profile, "int8_gops")
    if int8 is None:
        factor = INT8_SPEEDUP_DOTPROD if isa & {"dotprod", "i8mm"} else INT8_SPEEDUP_NEON
        int8 = fp32 * factor
        notes.append(f"int8 peak unknown; assumed {factor:g}x fp32")
    has_fp16 = "fp16" in isa
    fp16 = _peak(profile, "fp16_gflops") or (2.0 * fp32 if has_fp16 else fp32)
    traits = _traits(backend)
    eff = traits.efficiency
    gops = {"fp32": fp32 * eff, "fp16": fp16 * eff, "int8": int8 * eff}
    measured = cal.get("matmul_gops") or {}
    measured = measured.get(backend, measured) if isinstance(measured.get(backend), dict) else measured
    for dtype in gops:
        if isinstance(measured.get(dtype), (int, float)):
            gops[dtype] = float(measured[dtype])
            notes.append(f"{dtype} matmul throughput from calibration")
    bandwidth = cal.get("bandwidth_gbs") or profile.memory.bandwidth_gbs  # a device property
    if bandwidth is None:
        bandwidth = DEFAULT_BANDWIDTH_GBS
        notes.append(f"memory bandwidth unknown; assumed {bandwidth:g} GB/s")
    speed = core_speedup(profile, fp32)
    if speed > 1.0 and not cal.get("overhead_ms"):
        notes.append(f"runtime overheads scaled by 1/{speed:.3g} (a core {speed:.3g}x a "
                     "Cortex-A72's fp32 peak)")
    overhead = (cal.get("overhead_ms") or {}).get(backend, traits.overhead_ms / speed)
    rss = (cal.get("runtime_memory_mb") or {}).get(backend, traits.runtime_memory_mb)
    per_op = _backend_value(cal, ("per_op_overhead_ms", "per_module_overhead_ms"), backend)
    matmul_fixed = (cal.get("matmul_fixed_ms") or {}).get(backend) or {}
    fixed = {f"matmul_{k}": float(v) for k, v in matmul_fixed.items()}
    for kind in ("conv", "memory"):
        value = _backend_value(cal, (f"{kind}_fixed_ms",), backend)
        if value is not None:
            fixed[kind] = value
    fixed_from = {k.split("_")[0]: float(v) for k, v in (cal.get("fixed_cost_from") or {}).items()}
    curve = {dtype: [[float(x), float(y)] for x, y in pts]
             for dtype, pts in ((cal.get("matmul_curve") or {}).get(backend) or {}).items() if len(pts) >= 2}
    cache = cal.get("effective_cache_mb") or cal.get("cache_mb")
    return DeviceRates(gops, float(bandwidth), has_fp16, float(overhead), float(rss),
                       traits.per_op_overhead_ms / speed if per_op is None else per_op, fixed, fixed_from,
                       _backend_value(cal, ("conv_gops",), backend),
                       _backend_value(cal, ("memory_gbs",), backend),
                       _backend_value(cal, ("transcendental_gbs",), backend),
                       _backend_value(cal, ("pool_gbs",), backend),
                       float(cache) if cache else None, tuple(notes), curve,
                       cache_is_effective=bool(cal.get("effective_cache_mb")),
                       stream_gbs=_backend_value(cal, ("stream_gbs",), backend),
                       decode_gbs=_by_type(cal, "decode_gbs", backend),
                       overhead_measured=backend in (cal.get("overhead_ms") or {}),
                       prefill_gops=_by_type(cal, "prefill_gops", backend),
                       decode_layer_ms=max(0.0, _backend_value(cal, ("decode_layer_ms",), backend) or 0.0))


def _by_type(cal: dict, key: str, backend: str) -> dict[str, float]:
    """``cal[key][backend]`` as {weight type: positive number}, the rest dropped."""
    values = (cal.get(key) or {}).get(backend)
    if not isinstance(values, dict):
        return {}
    return {str(k): float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0}


def _backend_value(cal: dict, keys: tuple[str, ...], backend: str) -> float | None:
    """The first of ``cal[key][backend]`` for ``keys`` that is a number, else None."""
    for key in keys:
        value = (cal.get(key) or {}).get(backend)
        if isinstance(value, (int, float)):
            return float(value)
    return None


def _traits(backend: str):
    from ..backends import get_backend

    return get_backend(backend).traits
