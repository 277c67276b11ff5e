"""The planner: which compression recipe, on which backend, fits a device and runs fastest.

``make_plan(spec, profile, constraints)`` counts the model's cost per layer group
(:mod:`.stats`), measures each compression option's accuracy on calibration inputs
(:mod:`.sensitivity`), predicts size, memory and latency on the profile (:mod:`.cost`),
searches the combinations (:mod:`.search`) and returns a :class:`Plan` that explains every
option taken or rejected. :func:`load_plan` / :func:`save_plan` are its only I/O.
"""
from __future__ import annotations

from ..errors import NoFeasiblePlanError
from .cost import Prediction, predict
from .io import load_plan, save_plan
from .plan import Constraints, Plan
from .search import make_plan
from .stats import ModelStats, count_stats

__all__ = ["Constraints", "ModelStats", "NoFeasiblePlanError", "Plan", "Prediction", "count_stats",
           "load_plan", "make_plan", "predict", "save_plan"]
