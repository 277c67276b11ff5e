"""The prediction's uncertainty range, on fixed numbers, and the curve interpolation."""
from __future__ import annotations

import pytest

from edge.planner.cost import Prediction, interpolate_curve
from edge.planner.uncertainty import (MIN_UNCERTAINTY, UNCALIBRATED_UNCERTAINTY, calibrated_uncertainty,
                                      latency_range, relative_uncertainty, within)

from planner_helpers import with_calibration


def test_uncertainty_combines_spread_and_probe_error():
    assert calibrated_uncertainty(0.03, 0.04) == pytest.approx(2 * 0.05)
    assert calibrated_uncertainty(0.0, 0.01) == MIN_UNCERTAINTY  # never tighter than 10 %
    assert calibrated_uncertainty(0.3, 0.4) == pytest.approx(1.0)


def test_range_is_multiplicative_and_contains_the_prediction():
    assert latency_range(10.0, 0.25) == pytest.approx((8.0, 12.5))
    assert within(8.0, (8.0, 12.5)) and within(12.5, [8.0, 12.5]) and not within(12.6, (8.0, 12.5))
    pred = Prediction(1000, 10.0, 10.0, latency_uncertainty=0.25)
    assert pred.to_dict()["latency_range_ms"] == {"low": 8.0, "high": 12.5}
    assert pred.to_dict()["latency_uncertainty"] == 0.25
    assert "latency_range_ms" not in Prediction(1000, 10.0, 10.0).to_dict()


def test_profile_uncertainty_comes_from_its_calibration(pi_zero):
    assert relative_uncertainty(pi_zero, "executorch") == UNCALIBRATED_UNCERTAINTY
    cal = with_calibration(pi_zero, {"overhead_ms": {"executorch": 0.1}, "spread": {"executorch": 0.06},
                                     "probe_error": {"executorch": 0.08}})
    assert relative_uncertainty(cal, "executorch") == pytest.approx(0.2)
    assert relative_uncertainty(cal, "tflite") == UNCALIBRATED_UNCERTAINTY  # not calibrated for it


def test_curve_interpolates_log_log_and_scales_beyond_its_ends():
    points = [[1e6, 0.01], [1e8, 1.0]]
    assert interpolate_curve(points, 1e7) == pytest.approx(0.1)
    assert interpolate_curve(points, 5e5) == pytest.approx(0.005)  # proportional below
    assert interpolate_curve(points, 2e8) == pytest.approx(2.0)  # constant throughput above
