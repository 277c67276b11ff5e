"""The cost model: predicted artifact size, peak memory and latency on a device profile.

Pure arithmetic on :class:`~edge.planner.stats.ModelStats` (counted on the host) and a
``DeviceProfile``. An *assignment* maps each layer group to a precision key of
:data:`PRECISIONS` (``fp32``, ``fp16``, ``int8``, ``int4_g32`` ...; ``int8_static`` also
quantizes activations).

- size_bytes = sum over groups of params x bytes/param (+ quantization scales) + other
  params (norms, biases) in fp32 + a fixed container overhead per backend.
- peak_memory_mb = weights x the backend's weight residency (XNNPACK repacks weights next to
  the loaded program) + activation arena + the runner process's baseline RSS.
- latency_ms = the sum of :data:`TERMS`, each in ms (a calibration's ``term_scale`` may
  scale them per backend; a backend that fuses epilogues gets 0 for them uncalibrated):
  a fixed per-backend overhead
  + ops x per-op dispatch (every op of the traced graph, views included)
  + per op class (matmul at its dtype, conv, memory ops): calls x (a fixed cost per call,
  in full from the calibration's small-probe size ``fixed_cost_from`` up, a proportional
  share below it) + work / throughput
  + per group, max(flops / GOPS, bytes / in-cache throughput (``memory_gbs``, else
  bandwidth)), a roofline, over the share of the weights the cache holds; the weights one
  inference reads beyond the cache (``effective_cache_mb`` as calibrated, else CACHE_SHARE
  of the reported last-level ``cache_mb``; unknown: everything fits) stream from DRAM at the
  bandwidth on every inference (the ``stream`` term);
  attention matmuls at fp32; memory ops by the bytes they move / their throughput, with
  transcendentals (GELU, softmax, SiLU ...: ``transcendental_gbs``) and pooling (``pool_gbs``)
  at their own rates and epilogues (BatchNorm, ReLU, clamp, a bias on a conv's or matmul's
  output) apart;
  where the calibration has a ``matmul_curve`` for the backend and dtype (ms per call measured
  at a few FLOPs-per-call sizes), a matmul group's compute time is calls x the curve at its
  mean FLOPs per call (log-log interpolation; beyond the largest size at its throughput, below
  the smallest a proportional share), fixed cost included. A conv with int8 weights runs at
  the fp32 conv rate (the runtimes' hybrid kernels widen them).

Every prediction carries a relative uncertainty (:mod:`edge.planner.uncertainty`): from the
calibration's spread and the model's error on its probes, or a factor of 2 uncalibrated.

The per-backend constants are the backend's :class:`~edge.backends.base.CostTraits`; every
other constant below is an assumption documented here; when ``profile.calibration`` holds
measured numbers they win: ``bandwidth_gbs``; ``matmul_gops`` as ``{dtype: GOPS}`` or
``{backend: {dtype: GOPS}}`` (achieved throughput, so efficiency 1.0); and as
``{backend: value}`` (as written by :mod:`edge.calibrate`): ``overhead_ms``,
``per_op_overhead_ms`` (older calibrations: ``per_module_overhead_ms``),
``matmul_fixed_ms`` (``{backend: {dtype: ms}}``), ``conv_gops``, ``conv_fixed_ms``,
``memory_gbs``, ``memory_fixed_ms``, ``transcendental_gbs``, ``pool_gbs``, ``term_scale``
(``{backend: {term: factor}}``) and ``runtime_memory_mb``; ``cache_mb``, ``effective_cache_mb`` and
``fixed_cost_from`` (``{matmul_flops, conv_flops, memory_bytes}`` per op) are plain values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .stats import ModelStats

if TYPE_CHECKING:  # annotations only
    from ..profiles import DeviceProfile

MB = 1024 * 1024

# precision -> (bytes per weight, scale bytes per output row, compute dtype)
PRECISIONS: dict[str, tuple[float, float, str]] = {
    "fp32": (4.0, 0.0, "fp32"),
    "fp16": (2.0, 0.0, "fp16"),
    "int8": (1.0, 8.0, "int8"),          # per-channel scale + zero point
    "int8_static": (1.0, 8.0, "int8"),   # weights and activations int8
    "int4_g32": (0.5 + 4 / 32, 0.0, "int8"),   # 4-bit values + one fp32 scale per 32 weights
    "int4_g64": (0.5 + 4 / 64, 0.0, "int8"),
    "int4_g128": (0.5 + 4 / 128, 0.0, "int8"),
}
# Per-backend assumptions (container overhead, weight residency, runtime RSS, kernel efficiency,
# fixed and per-op overheads, int8 storage) are the backend's own: ``get_backend(b).traits``.
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
# The terms a latency prediction is the sum of (ms each; a calibration may scale each per backend):
# the per-inference overhead, per-op dispatch, grouped matmuls (fixed cost per call + compute or
# an in-cache roofline), convs, attention matmuls outside the groups, memory ops, epilogues
# (BatchNorm, ReLU, clamp, bias applied to a matmul's or conv's output: dispatch, fixed cost and
# bytes), transcendental memory ops (GELU, softmax, SiLU ...) and pooling at their own rates, and
# the weights that do not fit the cache, streamed from DRAM.
TERMS = ("overhead", "dispatch", "matmul", "conv", "attention", "memory", "transcendental", "pool",
         "epilogue", "stream")


@dataclass
class Prediction:
    """Predicted figures for one candidate on one device."""

    size_bytes: int
    peak_memory_mb: float
    latency_ms: float
    accuracy: float | None = None
    notes: list[str] = field(default_factory=list)
    # language models: context, KV-cache MB, largest context that fits, TTFT, prefill/decode tok/s
    # (then latency_ms is one decode step, what a device measures per generated token)
    generation: dict | None = None
    # relative half-width of the latency range: [latency / (1 + u), latency x (1 + u)]
    latency_uncertainty: float | None = None
    # ms per latency term (TERMS), after the calibration's scales: where the time goes
    latency_terms: dict[str, float] | None = None

    @property
    def latency_range_ms(self) -> tuple[float, float] | None:
        from .uncertainty import latency_range

        u = self.latency_uncertainty
        return None if u is None else latency_range(self.latency_ms, u)

    def to_dict(self) -> dict:
        out = {"size_bytes": int(self.size_bytes), "size_mb": round(self.size_bytes / MB, 3),
               "peak_memory_mb": round(self.peak_memory_mb, 2),
               "latency_ms": round(self.latency_ms, 3),
               "accuracy": None if self.accuracy is None else round(self.accuracy, 5)}
        if self.latency_range_ms is not None:
            low, high = self.latency_range_ms
            out["latency_range_ms"] = {"low": round(low, 3), "high": round(high, 3)}
            out["latency_uncertainty"] = round(self.latency_uncertainty, 3)
        if self.generation is not None:
            out["generation"] = dict(self.generation)
        return out


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
                       cache_is_effective=bool(cal.get("effective_cache_mb")))


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


def _weight_bytes(stats: ModelStats, assignment: dict[str, str], backend: str) -> dict[str, float]:
    traits = _traits(backend)
    out = {}
    for name, g in stats.groups.items():
        per_param, per_row, _ = PRECISIONS[assignment.get(name, "fp32")]
        if per_row and traits.int8_weight_bytes is not None:  # the format stores int8 less compactly
            per_param, per_row = traits.int8_weight_bytes, traits.int8_row_bytes or per_row
        out[name] = g.weight_params * per_param + g.rows * per_row
    return out


def _stored_bytes(stats: ModelStats, weight_bytes: dict[str, float], backend: str) -> dict[str, float]:
    """``weight_bytes`` less the tied share of a group, for a backend that stores a tied weight once."""
    if not _traits(backend).tied_weights_stored_once:
        return dict(weight_bytes)
    return {name: b * (1 - stats.groups[name].shared_params / max(stats.groups[name].weight_params, 1))
            for name, b in weight_bytes.items()}


def predict_size_bytes(stats: ModelStats, assignment: dict[str, str], backend: str) -> int:
    """Artifact file size: weights at their precision + fp32 remainder + container overhead."""
    weights = sum(_stored_bytes(stats, _weight_bytes(stats, assignment, backend), backend).values())
    return int(weights + stats.other_params * 4 + _traits(backend).container_overhead_bytes)


def _fixed_terms(stats: ModelStats, assignment: dict[str, str], rates: DeviceRates,
                 terms: dict[str, float]) -> None:
    """Overhead, per-op dispatch and the fixed cost of each matmul, conv and memory op, into
    ``terms`` (ms) by term: epilogue ops' dispatch and fixed cost go to ``epilogue``."""
    terms["overhead"] += rates.overhead_ms
    ops = max(stats.ops, sum(g.modules for g in stats.groups.values()))
    epilogues = min(stats.epilogue_ops, ops)
    terms["dispatch"] += (ops - epilogues) * rates.per_op_overhead_ms
    terms["epilogue"] += epilogues * rates.per_op_overhead_ms
    grouped = 0
    for name, g in stats.groups.items():
        if name == "embedding" or not g.modules:
            continue
        grouped += g.modules
        dtype = PRECISIONS[assignment.get(name, 'fp32')][2]
        if name != "conv" and dtype in rates.matmul_curve:
            continue  # the measured curve includes the fixed cost per call
        kind = "conv" if name == "conv" else f"matmul_{dtype}"
        terms["conv" if name == "conv" else "matmul"] += rates.call_ms(kind, g.modules, g.flops / g.modules)
    others = max(0, stats.matmul_ops - grouped)
    if others and "fp32" not in rates.matmul_curve:
        terms["attention"] += rates.call_ms("matmul_fp32", others, stats.other_flops / others)
    if stats.memory_ops:
        per_op = stats.memory_bytes / stats.memory_ops
        plain = stats.memory_ops - stats.epilogue_ops - stats.transcendental_ops - stats.pool_ops
        for term, count in (("memory", plain), ("epilogue", stats.epilogue_ops),
                            ("transcendental", stats.transcendental_ops), ("pool", stats.pool_ops)):
            terms[term] += rates.call_ms("memory", count, per_op)


def predict(stats: ModelStats, assignment: dict[str, str], backend: str, profile: DeviceProfile) -> Prediction:
    """Size, peak memory and latency of ``stats`` under ``assignment`` on ``profile``."""
    rates = device_rates(profile, backend)
    weight_bytes = _weight_bytes(stats, assignment, backend)
    resident = _stored_bytes(stats, weight_bytes, backend)
    terms = dict.fromkeys(TERMS, 0.0)
    _fixed_terms(stats, assignment, rates, terms)
    read_weights = {name: g.read_params / max(g.weight_params, 1) * weight_bytes[name]
                    for name, g in stats.groups.items()}
    cache, total_read = rates.cache_bytes, sum(read_weights.values())
    # the weights beyond what the cache holds come from DRAM on every inference (the "stream"
    # term); the groups' own rooflines read the cached share
    cached = 1.0 if cache is None or total_read <= cache else cache / total_read
    terms["stream"] += (1.0 - cached) * total_read / (rates.bandwidth_gbs * 1e6)
    # attention matmuls (outside the groups) at fp32, from the curve where measured
    others = max(0, stats.matmul_ops - sum(g.modules for n, g in stats.groups.items()
                                           if n != "embedding"))
    other_ms = rates.curve_ms("fp32", others, stats.other_flops / max(others, 1)) \
        if stats.other_flops else 0.0
    terms["attention"] += stats.other_flops / (rates.gops["fp32"] * 1e6) if other_ms is None else other_ms
    memory_rate = (rates.memory_gbs or rates.bandwidth_gbs) * 1e6  # bytes per ms
    plain = stats.memory_bytes - stats.epilogue_bytes - stats.transcendental_bytes - stats.pool_bytes
    terms["memory"] += plain / memory_rate
    terms["epilogue"] += stats.epilogue_bytes / memory_rate
    terms["transcendental"] += stats.transcendental_bytes / (
        rates.transcendental_gbs * 1e6 if rates.transcendental_gbs else memory_rate)
    terms["pool"] += stats.pool_bytes / (rates.pool_gbs * 1e6 if rates.pool_gbs else memory_rate)
    for name, g in stats.groups.items():
        precision = assignment.get(name, "fp32")
        compute = PRECISIONS[precision][2]
        if compute == "fp16" and not rates.has_fp16:
            compute = "fp32"  # no fp16 arithmetic: weights are widened at load time
            resident[name] = _stored_bytes(stats, {name: g.weight_params * 4.0}, backend)[name]
        act_scale = 0.25 if precision == "int8_static" else 1.0
        read = read_weights[name] * cached + g.activation_bytes * act_scale
        curve_ms = None if name in ("conv", "embedding") else \
            rates.curve_ms(compute, g.modules, g.flops / max(g.modules, 1))
        flops_ms = g.flops / (rates.gops_for(name, compute) * 1e6) if curve_ms is None else curve_ms
        term = "conv" if name == "conv" else "matmul"
        if curve_ms is not None:  # the curve holds the reads of weights up to its probes' size
            per_call = read_weights[name] / max(g.modules, 1)
            bound_ms = read / (rates.bandwidth_gbs * 1e6) if per_call > CURVE_WEIGHT_BYTES else 0.0
            terms[term] += max(flops_ms, bound_ms)
        else:  # the cached share read at the in-cache rate where calibrated (the rest streams)
            terms[term] += max(flops_ms, read / memory_rate)
    scales = term_scales(profile, backend)
    latency_ms = sum(scales.get(t, 1.0) * ms for t, ms in terms.items())
    memory_mb = ((sum(resident.values()) + stats.other_params * 4) * _traits(backend).weight_residency
                 + stats.peak_activation_bytes) / MB + rates.runtime_memory_mb
    from .uncertainty import relative_uncertainty

    return Prediction(predict_size_bytes(stats, assignment, backend), memory_mb, latency_ms,
                      notes=list(rates.notes), latency_uncertainty=relative_uncertainty(profile, backend),
                      latency_terms={t: ms * scales.get(t, 1.0) for t, ms in terms.items() if ms})


def term_scales(profile: DeviceProfile, backend: str) -> dict[str, float]:
    """Multipliers of the latency terms: the calibration's fitted ``term_scale`` for the backend
    where it has one, else the backend's traits (a runtime that fuses epilogues: 0 for them)."""
    fitted = ((profile.calibration or {}).get("term_scale") or {}).get(backend)
    if isinstance(fitted, dict):
        return {t: float(v) for t, v in fitted.items() if isinstance(v, (int, float))}
    return {"epilogue": 0.0} if _traits(backend).fuses_epilogues else {}
