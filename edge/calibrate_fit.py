"""How the cost model's terms add up on a device: a scale per latency term, fitted to the probes.

The rates of :mod:`edge.calibrate_derive` reproduce each single-op probe by construction. A real
model mixes ops at shapes and in sequences the single-op probes do not have (a bias, a 3-D
activation, a norm between matmuls, views between kernels), and a runtime's cost per op there
differs from the probes' by a factor that depends on the kind of op. The composite probes of
:mod:`edge.calibrate_probes` (a small MLP, conv net, encoder and Llama block) measure that: for
each backend, with the new rates, the cost model predicts every probe as a sum of its latency
terms (:data:`edge.planner.cost.TERMS`), and a scale per term is fitted so that

    sum over probes of w_p x (sum over terms of scale_t x term_t / measured - 1) ** 2
        + RIDGE x sum over terms of (scale_t - 1) ** 2

is least: relative errors, so a 10 us probe counts as much as a 10 ms one; a composite probe
weighs COMPOSITE_WEIGHT single-op probes (w_p), which keep the rates they measured near 1; the
ridge keeps a term the probes say little about at 1. The matmul term (UNFITTED) is not scaled:
its curve is measured at four sizes, and a composite's small matmuls running faster or slower than
the curve is a matter of shape a single factor would carry to every other model. Only terms that
are at least MIN_SHARE of some probe's time are fitted, each scale kept within SCALE_BOUNDS. The
result is the calibration's ``term_scale`` (``{backend: {term: factor}}``, the backend's own
defaults folded in: a term a runtime fuses away stays 0), which
:func:`edge.planner.cost.predict` applies.
"""
from __future__ import annotations

from typing import Any

from .calibrate_derive import ProbeResult, predict_probe, sig
from .calibrate_probes import COMPOSITE_KINDS

RIDGE = 0.05  # pull of each scale toward 1
UNFITTED = ("matmul",)  # held at 1: the matmul curve is its own measurement
COMPOSITE_WEIGHT = 3.0  # a composite probe's error counts this many times a single-op probe's
MIN_SHARE = 0.02  # a term below this share of every probe's measured time is not fitted
SCALE_BOUNDS = (1 / 3, 3.0)


def solve_scales(shares: list[list[float]], ridge: float = RIDGE,
                 bounds: tuple[float, float] = SCALE_BOUNDS, weights: list[float] | None = None,
                 held: list[bool] | None = None) -> list[float]:
    """Scales s minimizing sum_p w_p (sum_t s_t shares[p][t] - 1)^2 + ridge sum_t (s_t - 1)^2 over
    the terms (columns) whose largest share is at least MIN_SHARE and that ``held`` does not
    mark (the rest stay 1, their shares counted as predicted), clipped to ``bounds``.
    ``shares[p][t]``: term t's predicted time / probe p's measured time; ``weights`` w_p (default
    1 each)."""
    import numpy as np

    if not shares:
        return []
    raw = np.asarray(shares, dtype=float)
    w = np.sqrt(np.asarray(weights if weights is not None else [1.0] * len(shares), dtype=float))
    a = raw * w[:, None]  # each probe's row times the square root of its weight
    scales = np.ones(a.shape[1])
    held = held or [False] * a.shape[1]
    cols = [t for t in range(a.shape[1]) if raw[:, t].max() >= MIN_SHARE and not held[t]]
    if not cols:
        return scales.tolist()
    sub = a[:, cols]
    target = w - a[:, [t for t in range(a.shape[1]) if t not in cols]].sum(axis=1)  # what is left to explain
    # normal equations of the ridge problem centred on 1: (A'A + rI) s = A'b + r1
    lhs = sub.T @ sub + ridge * np.eye(len(cols))
    rhs = sub.T @ target + ridge * np.ones(len(cols))
    scales[cols] = np.clip(np.linalg.solve(lhs, rhs), *bounds)
    return scales.tolist()


def probe_terms(r: ProbeResult, backend: str, profile: Any) -> dict[str, float]:
    """The cost model's latency terms (ms) for probe ``r`` on ``backend`` with ``profile``."""
    return predict_probe(r.probe, backend, profile).latency_terms or {}


def fit_term_scales(results: dict[str, list[ProbeResult]], profile: Any) -> dict[str, dict[str, float]]:
    """``term_scale`` per backend that ran a composite probe, from every plain probe's terms under
    ``profile`` (which holds the new rates and no ``term_scale``) and its measured p50."""
    from .planner.cost import TERMS, term_scales

    out: dict[str, dict[str, float]] = {}
    for backend, rs in results.items():
        plain = [r for r in rs if r.probe.kind != "decoder"]
        if not any(r.probe.kind in COMPOSITE_KINDS for r in plain):
            continue
        shares = []
        for r in plain:
            terms = probe_terms(r, backend, profile)
            shares.append([terms.get(t, 0.0) / r.p50_ms for t in TERMS])
        weights = [COMPOSITE_WEIGHT if r.probe.kind in COMPOSITE_KINDS else 1.0 for r in plain]
        fitted = solve_scales(shares, weights=weights, held=[t in UNFITTED for t in TERMS])
        base = term_scales(profile, backend)
        out[backend] = {t: sig(base.get(t, 1.0) * s, 3) for t, s in zip(TERMS, fitted)}
    return out
