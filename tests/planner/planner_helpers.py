"""Helpers for planner tests."""
from __future__ import annotations


def with_calibration(profile, calibration: dict):
    """The same profile with measured numbers attached."""
    data = profile.to_dict()
    data["calibration"] = calibration
    return type(profile).from_dict(data)
