"""The cost model: predicted artifact size, peak memory and latency on a device profile.

Pure arithmetic on :class:`~edge.planner.stats.ModelStats` (counted on the host) and a
``DeviceProfile``. An *assignment* maps each layer group to a precision key of
:data:`PRECISIONS` (``fp32``, ``fp16``, ``int8``, ``int4_g32`` ...; ``int8_static`` also
quantizes activations).

- size_bytes = sum over groups of params x bytes/param (+ quantization scales) + other
  params (norms, biases) in fp32 + a fixed container overhead per backend.
- peak_memory_mb = weights x the backend's weight residency (XNNPACK repacks weights next to
  the loaded program) + activation arena + the runner process's baseline RSS.
- latency_ms = the sum of :data:`TERMS`, each in ms, times a per-term factor (1, except 0 for
  epilogues on a backend that fuses them; a profile's ``calibration.term_scale`` sets them per
  backend, for a runtime that behaves otherwise: ``edge profiles calibrate`` does not write it):
  a fixed per-backend overhead
  + ops x per-op dispatch (every op of the traced graph, views included)
  + per op class (matmul at its dtype, conv, memory ops): calls x (a fixed cost per call,
  in full from the calibration's small-probe size ``fixed_cost_from`` up, a proportional
  share below it) + work / throughput
  + per group, max(flops / GOPS, bytes / in-cache throughput (``memory_gbs``, else
  bandwidth)), a roofline, over the share of the weights the cache holds; the weights one
  inference reads beyond the cache (``effective_cache_mb`` as calibrated, else CACHE_SHARE
  of the reported last-level ``cache_mb``; unknown: everything fits) stream from DRAM at the
  bandwidth (``stream_gbs`` where calibrated) on every inference (the ``stream`` term);
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
``memory_gbs``, ``memory_fixed_ms``, ``transcendental_gbs``, ``pool_gbs``, ``stream_gbs``, ``term_scale``
(``{backend: {term: factor}}``) and ``runtime_memory_mb``; ``cache_mb``, ``effective_cache_mb`` and
``fixed_cost_from`` (``{matmul_flops, conv_flops, memory_bytes}`` per op) are plain values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .rates import (CACHE_SHARE, CURVE_WEIGHT_BYTES, MB, DeviceRates,  # noqa: F401 (re-exported)
                    _traits, device_rates, interpolate_curve)
from .stats import ModelStats

if TYPE_CHECKING:  # annotations only
    from ..profiles import DeviceProfile

# precision -> (bytes per weight, scale bytes per output row, compute dtype)
PRECISIONS: dict[str, tuple[float, float, str]] = {
    "fp32": (4.0, 0.0, "fp32"),
    "fp16": (2.0, 0.0, "fp16"),
    "int8": (1.0, 8.0, "int8"),          # per-channel scale + zero point
    "int8_static": (1.0, 8.0, "int8"),   # weights and activations int8
    "int4_g32": (0.5 + 4 / 32, 0.0, "int8"),   # 4-bit values + one fp32 scale per 32 weights
    "int4_g64": (0.5 + 4 / 64, 0.0, "int8"),
    "int4_g128": (0.5 + 4 / 128, 0.0, "int8"),
    "q4_0": (18 / 32, 0.0, "int8"),  # llama.cpp's whole-file Q4_0: 4-bit values + an fp16 scale per 32
}
# Per-backend assumptions (container overhead, weight residency, runtime RSS, kernel efficiency,
# fixed and per-op overheads, int8 storage) are the backend's own: ``get_backend(b).traits``.
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
    # the peak's two parts, MB: the runtime's own RSS before a model loads (what the runner reports
    # as baseline_rss_mb) and everything the model adds (weights as resident, activation arena, a
    # language model's KV cache); peak_memory_mb = runtime_memory_mb + model_memory_mb (None: the
    # model's share is the peak less the runtime)
    runtime_memory_mb: float = 0.0
    model_memory_mb: float | None = None

    def __post_init__(self) -> None:
        if self.model_memory_mb is None:
            self.model_memory_mb = self.peak_memory_mb - self.runtime_memory_mb

    def add_model_memory(self, mb: float) -> None:
        """Add ``mb`` the model holds beyond :func:`predict`'s count (a KV cache) to its share and the peak."""
        self.model_memory_mb += mb
        self.peak_memory_mb += mb

    @property
    def latency_range_ms(self) -> tuple[float, float] | None:
        from .uncertainty import latency_range

        u = self.latency_uncertainty
        return None if u is None else latency_range(self.latency_ms, u)

    def to_dict(self) -> dict:
        runtime_mb, model_mb = round(self.runtime_memory_mb, 2), round(self.model_memory_mb, 2)
        out = {"size_bytes": int(self.size_bytes), "size_mb": round(self.size_bytes / MB, 3),
               "peak_memory_mb": round(runtime_mb + model_mb, 2), "runtime_memory_mb": runtime_mb,
               "model_memory_mb": model_mb,
               "latency_ms": round(self.latency_ms, 3),
               "accuracy": None if self.accuracy is None else round(self.accuracy, 5)}
        if self.latency_range_ms is not None:
            low, high = self.latency_range_ms
            out["latency_range_ms"] = {"low": round(low, 3), "high": round(high, 3)}
            out["latency_uncertainty"] = round(self.latency_uncertainty, 3)
        if self.generation is not None:
            out["generation"] = dict(self.generation)
        return out


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
    terms["stream"] += (1.0 - cached) * total_read / ((rates.stream_gbs or rates.bandwidth_gbs) * 1e6)
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
    # what the model adds to the runtime's baseline RSS: its weights as resident (an embedding table
    # at its own residency), the activation arena and what loading any model adds
    traits = _traits(backend)
    if set(profile.cpu.isa or ()) & set(traits.repack_isa):  # matmul weights: a second, repacked copy
        resident = {n: b * (2.0 if n != "embedding" and assignment.get(n) in traits.repacked_precisions else 1.0)
                    for n, b in resident.items()}
    table = resident.pop("embedding", 0.0)
    table_residency = traits.weight_residency if traits.embedding_residency is None else traits.embedding_residency
    model_mb = (((sum(resident.values()) + stats.other_params * 4) * traits.weight_residency
                 + table * table_residency + stats.peak_activation_bytes * traits.activation_residency) / MB
                + traits.load_memory_mb)
    from .uncertainty import relative_uncertainty

    return Prediction(predict_size_bytes(stats, assignment, backend), rates.runtime_memory_mb + model_mb,
                      latency_ms, notes=list(rates.notes),
                      latency_uncertainty=relative_uncertainty(profile, backend),
                      latency_terms={t: ms * scales.get(t, 1.0) for t, ms in terms.items() if ms},
                      runtime_memory_mb=rates.runtime_memory_mb, model_memory_mb=model_mb)


def term_scales(profile: DeviceProfile, backend: str) -> dict[str, float]:
    """Multipliers of the latency terms: the profile's ``calibration.term_scale`` for the backend
    where it has one, else the backend's traits (a runtime that fuses epilogues: 0 for them)."""
    fitted = ((profile.calibration or {}).get("term_scale") or {}).get(backend)
    if isinstance(fitted, dict):
        return {t: float(v) for t, v in fitted.items() if isinstance(v, (int, float))}
    return {"epilogue": 0.0} if _traits(backend).fuses_epilogues else {}
