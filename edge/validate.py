"""Validate an exported artifact against the eager fp32 model, on the host, in its real runtime.

``validate(artifact, spec)`` runs the artifact over ``spec.eval_inputs`` (transposed and
cast to the artifact's own input layout/dtype as its manifest says), compares the outputs
with the eager fp32 model's and checks them against a tolerance chosen by the artifact's
precision. It returns a dict (stored as the manifest's ``validation``) or raises
:class:`~edge.errors.ValidationError` saying by how much and what the tolerance was.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from .artifact import Artifact
from .backends import BACKENDS, get_backend
from .backends.base import eager_outputs, from_artifact_outputs, to_artifact_inputs
from .errors import ConfigError, ValidationError
from .evaluate import details

if TYPE_CHECKING:  # annotations only
    from .models.base import ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tolerance:
    """Limits on the first output of the artifact vs the fp32 reference.

    ``max_rel_error``: max |a - b| divided by max |reference| (None = unchecked);
    ``min_cosine``: mean cosine of outputs; ``min_score``: the model's own metric
    (:mod:`edge.evaluate`, 1.0 = identical).
    """

    max_rel_error: float | None = None
    min_cosine: float = 0.0
    min_score: float = 0.0

    @classmethod
    def from_dict(cls, values: dict) -> "Tolerance":
        allowed = [f.name for f in dataclasses.fields(cls)]
        for key, value in values.items():
            if key not in allowed:
                raise ConfigError(f"tolerance: unknown key {key!r} (value {value!r}); expected one of {allowed}")
        return cls(**values)


# Per precision; "lossy" is fp32 arithmetic on a changed model (pruned, low-rank, distilled).
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_rel_error=1e-3, min_cosine=0.9999, min_score=0.98),
    "fp16": Tolerance(max_rel_error=2e-2, min_cosine=0.999, min_score=0.95),
    "int8": Tolerance(min_cosine=0.95, min_score=0.85),
    "int4": Tolerance(min_cosine=0.85, min_score=0.7),
    "lossy": Tolerance(min_cosine=0.8, min_score=0.6),
}


def precision_of(manifest: dict) -> str:
    """The precision an artifact computes in: from its compression recipe and backend options."""
    compression = manifest.get("compression") or {}
    if compression.get("precision") in TOLERANCES:
        return compression["precision"]
    tags = {step.get("type"): step for step in compression.get("recipe", []) if isinstance(step, dict)}
    kv_dtype = (tags.pop("kv_cache", None) or {}).get("dtype")  # the cache computes at its own type
    from .compress import structural_tags

    # what the backend's own export options imply (e.g. a quantized variant picked at conversion)
    owners = [manifest["backend"]] if manifest.get("backend") in BACKENDS else list(BACKENDS)
    implied = [get_backend(b).option_precision(compression.get("options") or {}) for b in owners]
    quant = next((p for p in implied if p), None)
    if structural_tags() & tags.keys():  # the function itself changed: only loose bounds apply
        return "lossy"
    if "int4_weight" in tags or tags.get("embedding_quant", {}).get("bits") == 4:
        return "int4"
    if {"int8_dynamic", "int8_static", "embedding_quant"} & tags.keys() or quant == "int8" or kv_dtype == "q8_0":
        return "int8"
    if "fp16" in tags or quant == "fp16" or kv_dtype == "fp16":
        return "fp16"
    return "lossy" if tags else "fp32"


def reference_outputs(spec: ModelSpec, limit: int | None = None) -> list[list[np.ndarray]]:
    """The eager fp32 model's outputs over ``spec.eval_inputs`` (one list of arrays per sample)."""
    model = spec.model.eval()
    return [[o.numpy() for o in eager_outputs(model, x)] for x in spec.eval_inputs[:limit]]


def run_artifact(artifact: Artifact, inputs: Sequence[tuple]) -> list[list[np.ndarray]]:
    """Run the artifact in its host runtime over eager-layout inputs; outputs in eager layout."""
    run = get_backend(artifact.backend).load(artifact)
    entries_in, entries_out = artifact.manifest["inputs"], artifact.manifest["outputs"]
    outs = []
    for x in inputs:
        arrays = [t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in x]
        outs.append(from_artifact_outputs(run(to_artifact_inputs(arrays, entries_in)), entries_out))
    return outs


def validate(artifact: Artifact, spec: ModelSpec, reference_outputs: list | None = None,
             tolerance: Tolerance | dict | None = None, limit: int | None = None) -> dict:
    """Compare the artifact with the eager fp32 model over ``spec.eval_inputs``.

    ``reference_outputs`` (one list of arrays per eval input) defaults to the eager model's;
    ``tolerance`` defaults to :data:`TOLERANCES` for the artifact's precision; ``limit``
    caps the number of eval inputs. Raises ValidationError when a limit is exceeded.
    """
    precision = precision_of(artifact.manifest)
    tol = _tolerance(tolerance, precision)
    inputs = list(spec.eval_inputs[:limit])
    refs = reference_outputs if reference_outputs is not None else _reference(spec, limit)
    refs = refs[: len(inputs)]
    cands = run_artifact(artifact, inputs)
    ref0 = [np.asarray(r[0], dtype=np.float64) for r in refs]
    cand0 = [np.asarray(c[0], dtype=np.float64) for c in cands]
    stats = details(spec.metric, ref0, cand0, inputs)
    scale = max(float(max(np.abs(r).max() for r in ref0)), 1e-12)
    result = {
        **stats,
        "rel_error": stats["max_abs_error"] / scale,
        "samples": len(inputs),
        "precision": precision,
        "tolerance": dataclasses.asdict(tol),
        "runtime": artifact.backend,
    }
    failures = _failures(result, tol)
    result["passed"] = not failures
    if failures:
        raise ValidationError(
            f"{artifact.backend} artifact {artifact.path} disagrees with the eager fp32 model on "
            f"{len(inputs)} eval inputs ({precision} tolerance): " + "; ".join(failures)
            + ". Check the compression plan, or pass a looser tolerance if this is expected"
        )
    log.info("validated %s: %s %.4f, max abs error %.3g", artifact.path, spec.metric,
             result["score"], result["max_abs_error"])
    return result


def _reference(spec: ModelSpec, limit: int | None) -> list[list[np.ndarray]]:
    with torch.no_grad():
        return reference_outputs(spec, limit)


def _tolerance(tolerance: Tolerance | dict | None, precision: str) -> Tolerance:
    if tolerance is None:
        return TOLERANCES[precision]
    if isinstance(tolerance, dict):
        return Tolerance.from_dict(tolerance)
    return tolerance


def _failures(result: dict, tol: Tolerance) -> list[str]:
    out = []
    if tol.max_rel_error is not None and result["rel_error"] > tol.max_rel_error:
        out.append(f"max abs error {result['max_abs_error']:.3g} is {result['rel_error']:.3g} of the "
                   f"output range, tolerance {tol.max_rel_error:.3g}")
    if result["cosine"] < tol.min_cosine:
        out.append(f"cosine {result['cosine']:.5f} below {tol.min_cosine}")
    if result["score"] < tol.min_score:
        out.append(f"{result['metric']} score {result['score']:.4f} below {tol.min_score}")
    return out
