"""How far a latency prediction can be trusted: a relative half-width ``u`` and the range
``[latency / (1 + u), latency x (1 + u)]`` (multiplicative, so it never goes below zero).

With a calibration for the backend, ``u = max(MIN_UNCERTAINTY, K x sqrt(spread^2 + error^2))``:
``spread`` is how much the calibration's repeated probe timings disagreed (median over its
probes of (max - min) / median), ``error`` the cost model's own mean error predicting those
probes back (:mod:`edge.calibrate`); K = 2 covers a model the probes did not shape (a model's
op mix is never exactly a probe's) and the run-to-run noise of the measurement itself.
Without one, the peaks are datasheet or derived numbers and the overheads the backend's
assumptions: ``u = UNCALIBRATED_UNCERTAINTY`` (a factor of 2 either way).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only
    from ..profiles import DeviceProfile

K = 2.0
MIN_UNCERTAINTY = 0.10
UNCALIBRATED_UNCERTAINTY = 1.0


def calibrated_uncertainty(spread: float, probe_error: float) -> float:
    """``u`` from a calibration's spread and the model's error on its probes (both ratios)."""
    return max(MIN_UNCERTAINTY, K * math.hypot(max(spread, 0.0), max(probe_error, 0.0)))


def relative_uncertainty(profile: DeviceProfile, backend: str) -> float:
    """``u`` for ``backend``'s latency predictions on ``profile``."""
    cal = profile.calibration or {}
    if not isinstance((cal.get("overhead_ms") or {}).get(backend), (int, float)):
        return UNCALIBRATED_UNCERTAINTY
    spread = (cal.get("spread") or {}).get(backend)
    error = (cal.get("probe_error") or {}).get(backend)
    if not isinstance(spread, (int, float)) and not isinstance(error, (int, float)):
        return UNCALIBRATED_UNCERTAINTY / 2  # an older calibration that recorded neither
    return calibrated_uncertainty(float(spread or 0.0), float(error or 0.0))


def latency_range(latency_ms: float, uncertainty: float) -> tuple[float, float]:
    """``(low, high)`` ms for a prediction of ``latency_ms`` with relative half-width ``uncertainty``."""
    return latency_ms / (1.0 + uncertainty), latency_ms * (1.0 + uncertainty)


def within(measured_ms: float, latency_range_ms: tuple[float, float] | list[float]) -> bool:
    """Whether a measurement fell inside a predicted range."""
    low, high = latency_range_ms
    return low <= measured_ms <= high
