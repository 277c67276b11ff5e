"""The steps ``edge compare`` chains, as calls into the planner, exporter and bench.

Each step returns plain JSON-able data, so :mod:`edge.comparison` can record it in its
resumable state; :class:`Candidate` turns that data into a results row.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .artifact import sha256_file
from .errors import EdgeError
from .results import RunRow

log = logging.getLogger(__name__)


def all_backends() -> list[str]:
    """The registered backends, in registry order."""
    from .backends import BACKENDS

    return list(BACKENDS)


@dataclass
class Candidate:
    """One plan to measure: its name, the plan itself (JSON), predictions and reasons."""

    name: str
    plan: dict | None = None
    predicted: dict = field(default_factory=dict)
    reasons: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.name, "plan": self.plan, "predicted": self.predicted, "reasons": self.reasons}

    @classmethod
    def from_dict(cls, data: dict) -> "Candidate":
        return cls(**data)

    def base_row(self, backend: str) -> RunRow:
        return RunRow(backend=backend, plan_name=self.name, plan=self.plan, predicted=dict(self.predicted),
                      reasons=list(self.reasons))

    @staticmethod
    def apply_export(row: RunRow, exported: dict) -> None:
        validation = exported.get("validation") or {}
        row.size_bytes = exported.get("size_bytes")
        row.artifact_sha256 = exported.get("sha256")
        row.artifact_path = exported.get("path")
        row.delegation = exported.get("delegation")
        row.validation = validation
        row.accuracy = validation.get("score")
        row.metric = validation.get("metric")

    @staticmethod
    def apply_bench(row: RunRow, measured: dict) -> None:
        row.latency_ms = measured.get("latency_ms")
        row.latencies_ms = list(measured.get("latencies_ms") or [])
        row.peak_rss_mb = measured.get("peak_rss_mb")
        row.load_ms = measured.get("load_ms")
        row.first_inference_ms = measured.get("first_inference_ms")
        row.runtime = measured.get("runtime")
        row.runtime_version = measured.get("runtime_version")
        row.threads = measured.get("threads")
        row.context = measured.get("context") or {}
        row.generation = measured.get("generation")
        row.baseline_rss_mb = measured.get("baseline_rss_mb")


EMULATED_NOTE = ("target {target} runs under an emulator (profile {profile} says emulated): its latencies "
                 "and memory are the emulator's, not representative of any device's CPU; use its rows to "
                 "check that artifacts load and compute the same outputs")


class Steps:
    """The pipeline steps for one model on one target; the model loads on first need."""

    def __init__(self, model_ref: str, target: str, targets_file=None,
                 device_wait_s: float | None = None):
        self.model_ref, self.target, self.targets_file = model_ref, target, targets_file
        self.device_wait_s = device_wait_s  # not part of any cache key: it changes no result
        self._spec = None
        self._profile = None

    @property
    def spec(self):
        if self._spec is None:
            from .models import load_model

            self._spec = load_model(self.model_ref)
        return self._spec

    def profile_name(self, profile: str | None) -> str:
        """The profile to plan for: the given one, else the target's own; both checked to load."""
        from .targets import get_target

        target_profile = get_target(self.target, self.targets_file).profile  # an unknown target fails here
        profile = target_profile if profile is None else profile
        from .profiles import load_profile

        self._profile = load_profile(profile)
        return getattr(self._profile, "name", None) or str(profile)

    def notes(self, profile_name: str) -> list[str]:
        """Caveats for the reader, e.g. predictions made for another device than the one measured."""
        from .targets import get_target

        from .profiles import load_profile

        try:
            target_profile = get_target(self.target, self.targets_file).profile
            emulated = load_profile(target_profile).emulated
        except EdgeError:
            return []
        notes = [EMULATED_NOTE.format(target=self.target, profile=target_profile)] if emulated else []
        if target_profile != profile_name:
            notes.append(f"predictions are for profile {profile_name}; measurements come from target "
                         f"{self.target} (profile {target_profile}), so predicted and measured latency differ "
                         "by design")
        return notes

    def profile_data(self) -> dict:
        """The profile's content, so an edited profile invalidates recorded plans."""
        return self._profile.to_dict() if hasattr(self._profile, "to_dict") else {}

    def runtimes(self) -> tuple[str, ...] | None:
        """The runtimes the profile's device can run (None when it does not say)."""
        return tuple(getattr(self._profile, "runtimes", None) or ()) or None

    def plan(self, backend: str, settings: dict) -> list[Candidate]:
        """The best plan for ``backend`` and the next ``plans - 1`` of its Pareto front."""
        from .planner import Constraints, make_plan

        given = {k: settings.get(k) for k in ("min_accuracy", "max_latency_ms", "max_size_mb")}
        constraints = Constraints(**{k: v for k, v in given.items() if v is not None})
        plan = make_plan(self.spec, self._profile, constraints, backends=[backend])
        data = plan.to_dict()
        out = [Candidate(name=plan.tag, plan=data, predicted=dict(data.get("predicted") or {}),
                         reasons=[str(r) for r in data.get("reasons") or []])]
        for entry in data.get("pareto") or []:
            if len(out) >= settings["plans"]:
                break
            cand = _candidate_from_pareto(entry, data)
            if cand is not None and entry.get("backend") == backend and cand.name not in {c.name for c in out}:
                out.append(cand)
        if len(out) < settings["plans"]:
            log.info("%s: %d plan(s) on the Pareto front, %d asked for", backend, len(out), settings["plans"])
        return out

    def export(self, backend: str, cand: Candidate, art_dir: Path) -> dict:
        """Compress, export and validate; returns the artifact's path and manifest facts."""
        from .exporter import export

        artifact = export(self.spec, backend, art_dir, plan=cand.plan, use_cache=True)
        m = artifact.manifest
        return {"path": str(artifact.path), "sha256": m["sha256"], "size_bytes": m["size_bytes"],
                "validation": m.get("validation"), "delegation": m.get("delegation"),
                "compression": m.get("compression"), "cache_hit": bool(m.get("cache_hit"))}

    def bench(self, artifact_path: str, settings: dict) -> dict:
        """Deploy to the target and measure; returns the bench result as a dict."""
        from .benchmark import bench

        result = bench(artifact_path, settings["target"], warmup=settings["warmup"],
                       iterations=settings["iterations"], threads=settings["threads"],
                       targets_file=self.targets_file, prompt_tokens=settings.get("prompt_tokens"),
                       new_tokens=settings.get("new_tokens"),
                       **({"device_wait_s": self.device_wait_s} if self.device_wait_s is not None else {}))
        return result.to_dict()

    @staticmethod
    def still_valid(section: str, cached) -> bool:
        """A recorded export counts only while its artifact is on disk unchanged."""
        if section != "exports":
            return True
        path = Path(cached.get("path", ""))
        if not path.is_file():
            return False
        return sha256_file(path) == cached.get("sha256")


def _candidate_from_pareto(entry: dict, chosen: dict) -> Candidate | None:
    """A Pareto alternative as a plan of its own, when it carries its recipe's configs."""
    from .planner.plan import plan_tag

    configs = entry.get("recipe_configs") or []
    if not all(isinstance(c, dict) for c in configs):
        log.info("Pareto entry %s carries recipe labels, not configs; it cannot be exported", configs)
        return None
    structure = entry.get("structure")
    name = plan_tag(structure if isinstance(structure, str) else None, entry.get("groups") or {}, configs)
    plan = {**chosen, "tag": name, "recipe": configs, "groups": dict(entry.get("groups") or {}),
            "structure": structure if structure not in ("none", "") else None,
            "predicted": dict(entry.get("predicted") or {}), "pareto": [],
            "reasons": [f"Pareto alternative to {chosen.get('backend')} plan "
                        f"{plan_tag(chosen.get('structure'), chosen.get('groups') or {}, chosen.get('recipe'))}"]}
    return Candidate(name=name, plan=plan, predicted=plan["predicted"], reasons=plan["reasons"])
