"""From probe timings to the calibration block: pure arithmetic, no I/O.

Each probe is timed ``repeats`` times (separate runner processes, interleaved in rounds so a
neighbour's burst of load hits one repeat of many probes, not every repeat of one probe); its
figure is the **median** of the repeats' p50s and its **spread** is ``(max - min) / median``
of them. A backend's spread is the median over its probes; :func:`check_noise` refuses a
calibration whose spread exceeds ``max_spread`` (the numbers would not hold up on a rerun).

Fixed costs are subtracted first, so the cost model (:mod:`edge.planner.cost`) reproduces
each probe: ``per_op = (p50_dispatch - p50_overhead) / 15``, ``overhead = p50_overhead - per_op`` (its
one op pays dispatch like any other); a matmul layer (conv, memory
op) takes ``fixed + flops / GOPS`` (``bytes / GB/s``), solved from the big and the small probe
(without the small one, ``fixed`` is 0). The tiny, small, big and wide matmul probes also give
``matmul_curve``: ms per call against FLOPs per call, which the cost model interpolates.
Memory ops are rated on the ``activation`` probe (norms, GELU, softmax, affine: what real
models run), else on ``elementwise``.
"""
from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from typing import Any

from .calibrate_probes import Probe
from .errors import CalibrationNoiseError

log = logging.getLogger(__name__)

CALIBRATION_SCHEMA_VERSION = 1
MIN_NET_SHARE = 0.05  # p50 - fixed costs is taken as at least this share of p50
DEFAULT_MAX_SPREAD = 0.25  # a backend's median probe spread above this: too noisy to write
CURVE_PROBES = {"fp32": ("matmul_fp32_tiny", "matmul_fp32_small", "matmul_fp32", "matmul_fp32_wide"),
                "int8": ("matmul_int8_tiny", "matmul_int8_small", "matmul_int8", "matmul_int8_wide")}


@dataclass
class ProbeResult:
    """One probe timed on one backend (latencies in ms): ``bench`` is one repeat's
    :class:`~edge.benchmark.BenchResult` (RSS, context), ``p50s`` every repeat's p50."""

    backend: str
    probe: Probe
    bench: Any  # edge.benchmark.BenchResult
    p50s: tuple[float, ...] = ()
    ttfts: tuple[float, ...] = ()  # decoder probes: every repeat's time to first token (ms)

    @property
    def p50_ms(self) -> float:
        if self.p50s:
            return float(statistics.median(self.p50s))
        return float(self.bench.latency_ms["p50"] or self.bench.latency_ms["mean"])

    @property
    def spread(self) -> float:
        """(max - min) / median of the repeats' p50s; 0 with fewer than two repeats."""
        if len(self.p50s) < 2 or self.p50_ms <= 0:
            return 0.0
        return (max(self.p50s) - min(self.p50s)) / self.p50_ms


def _throughput(amount: float, r: ProbeResult, fixed_ms: float) -> float:
    """``amount`` per second in units of 1e9, over the time beyond ``fixed_ms``."""
    net_ms = r.p50_ms - fixed_ms
    if net_ms < MIN_NET_SHARE * r.p50_ms:
        log.warning("%s/%s: p50 %.4f ms is hardly above the fixed overhead %.4f ms; using %.0f%% "
                    "of p50", r.backend, r.probe.name, r.p50_ms, fixed_ms, MIN_NET_SHARE * 100)
        net_ms = MIN_NET_SHARE * r.p50_ms
    return amount / (net_ms * 1e-3) / 1e9


def sig(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits (what the YAML keeps)."""
    return float(f"{x:.{digits}g}")


def _fit(big: ProbeResult, small: ProbeResult | None, amount: str, base_ms: float,
         per_op_ms: float, memory_gbs: float | None = None) -> tuple[float, float]:
    """(throughput in units of 1e9 per s, fixed ms per op) of one op class: an op of the probes
    takes ``fixed + amount / throughput``, solved from two sizes (one size: fixed 0). The time
    the cost model gives a probe's memory ops (``memory_bytes / memory_gbs``) is taken off first."""
    def mem_ms(r: ProbeResult) -> float:
        return r.probe.memory_bytes / (memory_gbs * 1e9) * 1e3 if memory_gbs else 0.0

    fixed = 0.0
    if small is not None:
        net, per_op = {}, {}
        for r in (big, small):
            net[r.probe.name] = (r.p50_ms - base_ms - mem_ms(r) - r.probe.ops * per_op_ms) / r.probe.ops
            per_op[r.probe.name] = getattr(r.probe, amount) / r.probe.ops
        (net_big, net_small), (size_big, size_small) = net.values(), per_op.values()
        if net_big > net_small > 0 and size_big > size_small:
            fixed = max(0.0, net_small - size_small * (net_big - net_small) / (size_big - size_small))
        else:
            log.warning("%s/%s: the small probe is not faster per op than the big one; no fixed cost "
                        "derived", big.backend, small.probe.name)
    rate = _throughput(getattr(big.probe, amount), big,
                       base_ms + mem_ms(big) + big.probe.ops * (per_op_ms + fixed))
    return rate, fixed


OP_CLASSES = {  # calibration keys <- (big probe, small probe, amount); memory first (convs use it)
    ("memory_gbs", None): ("elementwise", "elementwise_small", "bytes_read"),
    ("matmul_gops", "fp32"): ("matmul_fp32", "matmul_fp32_small", "flops"),
    ("matmul_gops", "int8"): ("matmul_int8", "matmul_int8_small", "flops"),
    ("conv_gops", None): ("conv", "conv_small", "flops"),
}


def _curve(by_name: dict[str, ProbeResult], names: tuple[str, ...], base_ms: float,
           per_op_ms: float) -> list[list[float]]:
    """[[FLOPs per call, ms per call], ...] by size, net of the overhead and dispatch; a bigger
    call is never faster than a smaller one (noise is clamped, not extrapolated)."""
    points = []
    for name in names:
        if name in by_name:
            r = by_name[name]
            net_ms = (r.p50_ms - base_ms) / r.probe.ops - per_op_ms
            points.append((r.probe.flops / r.probe.ops, max(net_ms, MIN_NET_SHARE * r.p50_ms / r.probe.ops)))
    points.sort()
    out: list[list[float]] = []
    for flops, ms in points:
        out.append([flops, max(ms, out[-1][1] if out else 0.0)])
    return out if len(out) >= 2 else []


_STATS: dict[tuple, Any] = {}


def probe_stats(probe: Probe):
    """The probe counted as edge.planner.stats counts a real model (cached per shape)."""
    key = (probe.kind, probe.rows, probe.width_in, probe.width_out, probe.layers, bool(probe.recipe))
    if key not in _STATS:
        from .calibrate_probes import probe_spec
        from .planner.stats import count_stats

        spec = probe_spec(probe)
        _STATS[key] = count_stats(spec.model.eval(), spec.example_inputs)
    return _STATS[key]


def _net_ms(r: ProbeResult, base_ms: float, per_op_ms: float, other_ms: float = 0.0) -> float:
    """p50 less the overhead, dispatch and ``other_ms``, at least MIN_NET_SHARE of p50."""
    ops = probe_stats(r.probe).ops or r.probe.ops
    return max(r.p50_ms - base_ms - ops * per_op_ms - other_ms, MIN_NET_SHARE * r.p50_ms)


def _memory_rates(by_name: dict[str, ProbeResult], base_ms: float, per_op_ms: float,
                  out: dict[str, Any]) -> None:
    """``transcendental_gbs`` and ``pool_gbs`` from their probes (bytes as counted / net time),
    and ``memory_gbs`` from the activation probe with its transcendentals' time taken off."""
    if "transcendental" in by_name:
        r = by_name["transcendental"]
        out["transcendental_gbs"] = probe_stats(r.probe).transcendental_bytes / _net_ms(r, base_ms, per_op_ms) / 1e6
    if "pool" in by_name:
        r = by_name["pool"]
        out["pool_gbs"] = probe_stats(r.probe).pool_bytes / _net_ms(r, base_ms, per_op_ms) / 1e6
    if "activation" in by_name and "transcendental_gbs" in out:
        r = by_name["activation"]
        st = probe_stats(r.probe)
        trans_ms = st.transcendental_bytes / (out["transcendental_gbs"] * 1e6)
        out["memory_gbs"] = (st.memory_bytes - st.transcendental_bytes) / \
            _net_ms(r, base_ms, per_op_ms, trans_ms) / 1e6


def cache_and_stream(deep: ProbeResult, wide: ProbeResult, curve: list, base_ms: float,
                     per_op_ms: float) -> tuple[float, float | None]:
    """(MB of weights one inference keeps in cache, GB/s at which the rest streams) from the deep
    matmul probe: the matmul curve holds the wide probe's weights as they behaved, so time the deep
    probe spends beyond the curve is its extra weights streamed; none: the cache held them all."""
    from .planner.cost import MB, interpolate_curve

    deep_bytes, wide_bytes = (probe_stats(r.probe).total_params * 4.0 for r in (deep, wide))
    calls = deep.probe.layers
    expected = calls * interpolate_curve(curve, deep.probe.flops / calls)
    extra_ms = deep.p50_ms - base_ms - probe_stats(deep.probe).ops * per_op_ms - expected
    if extra_ms <= MIN_NET_SHARE * deep.p50_ms or deep_bytes <= wide_bytes:
        return deep_bytes / MB, None
    return wide_bytes / MB, (deep_bytes - wide_bytes) / (extra_ms * 1e-3) / 1e9


def _derive_backend(by_name: dict[str, ProbeResult]) -> dict[str, Any]:
    base = by_name["overhead"]
    per_op_ms = 0.0
    if "dispatch" in by_name:
        extra = by_name["dispatch"].probe.ops - base.probe.ops
        per_op_ms = max(0.0, (by_name["dispatch"].p50_ms - base.p50_ms) / extra)
    # the overhead probe's own op pays its dispatch, as every op of a model does in the cost model
    base_ms = max(base.p50_ms - base.probe.ops * per_op_ms, MIN_NET_SHARE * base.p50_ms)
    out: dict[str, Any] = {"overhead_ms": base_ms, "matmul_gops": {}, "matmul_fixed_ms": {}}
    if "dispatch" in by_name:
        out["per_op_overhead_ms"] = per_op_ms
    if base.bench.peak_rss_mb:  # the runtime alone (imported, no model loaded); else with the one-op model
        out["runtime_memory_mb"] = float(base.bench.baseline_rss_mb or base.bench.peak_rss_mb)
    for (key, dtype), (big, small, amount) in OP_CLASSES.items():
        if key == "memory_gbs" and "activation" in by_name:
            big, small = "activation", None
        if big in by_name:
            rate, fixed = _fit(by_name[big], by_name.get(small), amount, base_ms, per_op_ms,
                               out.get("memory_gbs"))
            if dtype:
                out[key][dtype] = rate
                if small in by_name:  # else the cost model falls back to the fp32 fixed cost
                    out["matmul_fixed_ms"][dtype] = fixed
            elif small in by_name:
                out[key], out[key.split("_")[0] + "_fixed_ms"] = rate, fixed
            else:
                out[key] = rate
    curves = {dtype: c for dtype, names in CURVE_PROBES.items()
              if (c := _curve(by_name, names, base_ms, per_op_ms))}
    if curves:
        out["matmul_curve"] = curves
    if "bandwidth" in by_name:
        r = by_name["bandwidth"]
        fixed_ms = base_ms + r.probe.ops * (per_op_ms + out["matmul_fixed_ms"].get("fp32", 0.0))
        out["bandwidth_gbs"] = _throughput(r.probe.bytes_read, r, fixed_ms)
    _memory_rates(by_name, base_ms, per_op_ms, out)
    if "matmul_fp32_deep" in by_name and "matmul_fp32_wide" in by_name and "fp32" in curves:
        cache, stream = cache_and_stream(by_name["matmul_fp32_deep"], by_name["matmul_fp32_wide"],
                                         curves["fp32"], base_ms, per_op_ms)
        out["effective_cache_mb"] = cache
        if stream is not None:
            out["stream_gbs"] = stream
    if not out["matmul_fixed_ms"]:
        del out["matmul_fixed_ms"]
    out["spread"] = statistics.median(r.spread for r in by_name.values())
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
    """The calibration numbers from probe timings: see the module docstring and
    :mod:`edge.calibrate`. ``spread`` is each backend's median probe spread, ``repeats`` the
    fewest repeats any probe had."""
    per = {}
    for b, rs in results.items():
        plain = {r.probe.name: r for r in rs if r.probe.kind != "decoder"}
        per[b] = _derive_backend(plain) if "overhead" in plain else {
            "matmul_gops": {}, "spread": statistics.median(r.spread for r in rs)}
        decoders = [r for r in rs if r.probe.kind == "decoder"]
        if decoders:
            from .calibrate_decode import derive_decode

            per[b].update(derive_decode(decoders, per[b].get("overhead_ms", 0.0)))
            baselines = [r.bench.baseline_rss_mb for r in decoders if r.bench.baseline_rss_mb]
            if "runtime_memory_mb" not in per[b] and baselines:  # the runner before it loads a decoder
                per[b]["runtime_memory_mb"] = statistics.median(baselines)
            if "overhead" in plain:  # the backend's spread covers its decoder probes too
                per[b]["spread"] = statistics.median(r.spread for r in rs)
    block: dict[str, Any] = {
        "schema_version": CALIBRATION_SCHEMA_VERSION,
        "matmul_gops": {b: {k: sig(v) for k, v in d["matmul_gops"].items()} for b, d in per.items()
                        if d["matmul_gops"]}}
    bandwidth = {b: sig(d["bandwidth_gbs"]) for b, d in per.items() if "bandwidth_gbs" in d}
    if bandwidth:
        block["bandwidth_gbs"] = sig(statistics.median(bandwidth.values()))
        block["bandwidth_gbs_by_backend"] = bandwidth
    caches = [d["effective_cache_mb"] for d in per.values() if "effective_cache_mb" in d]
    if caches:  # a device property: the least any backend that ran the deep probe kept cached
        block["effective_cache_mb"] = sig(min(caches))
    fixed = {b: {k: sig(v) for k, v in d["matmul_fixed_ms"].items()} for b, d in per.items()
             if "matmul_fixed_ms" in d}
    if fixed:
        block["matmul_fixed_ms"] = fixed
    curves = {b: {dtype: [[sig(x), sig(y)] for x, y in c] for dtype, c in d["matmul_curve"].items()}
              for b, d in per.items() if "matmul_curve" in d}
    if curves:
        block["matmul_curve"] = curves
    sizes = fixed_cost_from([r.probe for rs in results.values() for r in rs])
    if sizes:
        block["fixed_cost_from"] = sizes
    for key in ("overhead_ms", "per_op_overhead_ms", "conv_gops", "conv_fixed_ms", "memory_gbs",
                "memory_fixed_ms", "transcendental_gbs", "pool_gbs", "stream_gbs", "runtime_memory_mb",
                "decode_layer_ms"):
        values = {b: sig(d[key]) for b, d in per.items() if key in d}
        if values:
            block[key] = values
    for key in ("decode_gbs", "prefill_gops"):
        values = {b: {k: sig(v) for k, v in d[key].items()} for b, d in per.items() if d.get(key)}
        if values:
            block[key] = values
    block["spread"] = {b: sig(d["spread"], 3) for b, d in per.items()}
    block["repeats"] = min(max(len(r.p50s), 1) for rs in results.values() for r in rs)
    return block


def check_noise(results: dict[str, list[ProbeResult]], block: dict, max_spread: float) -> None:
    """Raise :class:`~edge.errors.CalibrationNoiseError` when a backend's median probe spread
    exceeds ``max_spread``, naming the noisiest probes."""
    noisy = {b: s for b, s in block.get("spread", {}).items() if s > max_spread}
    if not noisy:
        return
    worst = sorted((r for b in noisy for r in results[b]), key=lambda r: -r.spread)[:4]
    shown = ", ".join(f"{r.backend}/{r.probe.name} {100 * r.spread:.0f}% "
                      f"(p50s {', '.join(f'{x:.4g}' for x in r.p50s)} ms)" for r in worst)
    spreads = ", ".join(f"{b} {100 * s:.0f}%" for b, s in noisy.items())
    raise CalibrationNoiseError(
        f"calibration too noisy to trust: the repeated probe timings spread by {spreads} (median over "
        f"each backend's probes; at most {100 * max_spread:.0f}% expected); noisiest: {shown}. Nothing "
        "was written. Rerun when the device is idle (check its load average), with more --repeats, "
        "or accept the noise with a larger --max-spread")


def probe_errors(results: dict[str, list[ProbeResult]], profile: Any) -> dict[str, dict[str, float]]:
    """Per backend and probe: the cost model's prediction (ms) for the probe with ``profile``
    (which holds the new calibration), counted the way a real model is (edge.planner.stats)."""
    out: dict[str, dict[str, float]] = {}
    for backend, rs in results.items():
        for r in rs:
            if r.probe.kind == "decoder":  # its rates are its own measurement (edge.calibrate_decode)
                continue
            out.setdefault(backend, {})[r.probe.name] = predict_probe(r.probe, backend, profile).latency_ms
    return out


def predict_probe(probe: Probe, backend: str, profile: Any):
    """The cost model's :class:`~edge.planner.cost.Prediction` for ``probe`` on ``backend`` with
    ``profile``, the probe counted as a real model is (int8 weights where it has a recipe)."""
    from .planner.cost import predict

    st = probe_stats(probe)
    assignment = {g: "int8" for g in st.groups} if probe.recipe else {}
    return predict(st, assignment, backend, profile)
