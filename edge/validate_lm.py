"""Validate a language-model artifact against the eager fp32 model, on the host, in its runtime.

Three checks, all with the same generator class the on-device runner uses:

- **greedy tokens**: the artifact prefills the sample prompt and decodes N tokens greedily;
  ``token_agreement`` is the share of those tokens, up to the first difference, equal to the
  eager model's own greedy continuation (1.0 = identical);
- **logits per decode step**: each evaluation window is fed token by token through the
  artifact's decode step (teacher forcing, so both models see the same context) and every
  step's logits are compared with the eager model's (cosine, max abs error);
- **perplexity** of those logits on the evaluation text, against the eager model's.

Tolerances depend on the artifact's precision; fp32 artifacts must reproduce the eager
greedy tokens exactly.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .artifact import Artifact
from .backends import get_backend
from .errors import ValidationError
from .validate import precision_of

if TYPE_CHECKING:  # annotations only
    from .models.base import ModelSpec

log = logging.getLogger(__name__)

DEFAULT_NEW_TOKENS = 32


@dataclass(frozen=True)
class LMTolerance:
    min_token_agreement: float = 0.0
    min_cosine: float = 0.0
    min_score: float = 0.0  # ppl_reference / ppl_candidate, capped at 1


LM_TOLERANCES: dict[str, LMTolerance] = {
    "fp32": LMTolerance(min_token_agreement=1.0, min_cosine=0.9999, min_score=0.98),
    "fp16": LMTolerance(min_cosine=0.999, min_score=0.95),
    "int8": LMTolerance(min_cosine=0.95, min_score=0.85),
    "int4": LMTolerance(min_cosine=0.8, min_score=0.6),
    "lossy": LMTolerance(min_cosine=0.7, min_score=0.5),
}


def prefix_agreement(reference: list[int], candidate: list[int]) -> float:
    """Share of ``reference`` reproduced by ``candidate`` before the first differing token."""
    same = 0
    for a, b in zip(reference, candidate):
        if a != b:
            break
        same += 1
    return same / max(len(reference), 1)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def teacher_forced(gen: Any, model: torch.nn.Module, windows: list) -> dict:
    """Decode every window token by token through ``gen``; compare each step with the eager logits."""
    cosines, max_err, nll_ref, nll_cand, count = [], 0.0, 0.0, 0.0, 0
    for (tokens,) in windows:
        ids = tokens[0].tolist()
        with torch.no_grad():
            ref = model(tokens)[0].double().numpy()  # (T, V)
        gen.reset()
        cand = np.stack([np.asarray(gen.decode(tok, pos), dtype=np.float64) for pos, tok in enumerate(ids)])
        num = (ref * cand).sum(-1)
        cosines += list(num / np.maximum(np.linalg.norm(ref, axis=-1) * np.linalg.norm(cand, axis=-1), 1e-12))
        max_err = max(max_err, float(np.abs(ref - cand).max()))
        nxt = np.asarray(ids[1:])
        nll_ref -= float(_log_softmax(ref[:-1])[np.arange(len(nxt)), nxt].sum())
        nll_cand -= float(_log_softmax(cand[:-1])[np.arange(len(nxt)), nxt].sum())
        count += len(nxt)
    ppl_ref, ppl_cand = math.exp(nll_ref / count), math.exp(nll_cand / count)
    return {"cosine": float(np.mean(cosines)), "min_step_cosine": float(np.min(cosines)), "max_abs_error": max_err,
            "decode_steps": len(cosines), "ppl_reference": ppl_ref, "ppl_candidate": ppl_cand,
            "score": min(1.0, ppl_ref / ppl_cand)}


def validate_lm(artifact: Artifact, spec: ModelSpec, new_tokens: int | None = None, tolerance: LMTolerance | None = None,
                windows: int | None = None) -> dict:
    """Greedy-token, per-step-logits and perplexity checks; raises ValidationError past the tolerance."""
    from .models.llama import greedy
    from .runner.runner_generate import greedy_generate

    cfg = spec.generation.config
    prompt = spec.generation.prompt
    n = new_tokens or min(DEFAULT_NEW_TOKENS, cfg.context - prompt.shape[1])
    gen = get_backend(artifact.backend).load_generator(artifact, threads=torch.get_num_threads())
    eager_tokens, _ = greedy(spec.model.eval(), prompt, n)
    host_tokens = greedy_generate(gen, prompt[0].tolist(), n)[0]
    evals = list(spec.eval_inputs[:windows])
    stats = teacher_forced(gen, spec.model.eval(), evals)
    precision = precision_of(artifact.manifest)
    tol = tolerance or LM_TOLERANCES[precision]
    result = {
        "metric": "perplexity", **stats, "samples": len(evals), "precision": precision, "runtime": artifact.backend,
        "token_agreement": prefix_agreement(eager_tokens, host_tokens), "new_tokens": n,
        "tolerance": dataclasses.asdict(tol),
        "reference": {"prompt_tokens": int(prompt.shape[1]), "eager_tokens": eager_tokens, "host_tokens": host_tokens},
    }
    failures = []
    if result["token_agreement"] < tol.min_token_agreement:
        failures.append(f"greedy tokens agree with eager for {result['token_agreement']:.0%} of {n}, "
                        f"expected {tol.min_token_agreement:.0%}")
    if result["cosine"] < tol.min_cosine:
        failures.append(f"mean logits cosine per decode step {result['cosine']:.5f} below {tol.min_cosine}")
    if result["score"] < tol.min_score:
        failures.append(f"perplexity {result['ppl_candidate']:.3f} vs fp32 {result['ppl_reference']:.3f} "
                        f"(score {result['score']:.4f} below {tol.min_score})")
    result["passed"] = not failures
    if failures:
        raise ValidationError(
            f"{artifact.backend} artifact {artifact.path} disagrees with the eager fp32 model ({precision} "
            f"tolerance; perplexity {result['ppl_candidate']:.3f} vs fp32 {result['ppl_reference']:.3f}): "
            + "; ".join(failures) + ". Check the compression plan")
    log.info("validated %s: token agreement %.2f, ppl %.3f vs %.3f", artifact.path, result["token_agreement"],
             result["ppl_candidate"], result["ppl_reference"])
    return result
