"""Accuracy metrics on held-out inputs. Pure: tensors in, numbers out.

Each metric compares candidate outputs (an exported or compressed model) with the
fp32 eager reference on the same evaluation inputs and returns a score where 1.0
means "no change":

- ``cosine``: mean cosine similarity of the first output (embedders).
- ``top1``: fraction of samples whose arg-max class agrees (classifiers).
- ``perplexity``: ppl_reference / ppl_candidate on next-token prediction of the
  evaluation tokens (language models); capped at 1.0.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

Array = np.ndarray


def _flat(outputs: Sequence[Array]) -> Array:
    return np.stack([np.asarray(o, dtype=np.float64).reshape(-1) for o in outputs])


def cosine(ref: Sequence[Array], cand: Sequence[Array], inputs: Sequence[tuple] = ()) -> float:
    a, b = _flat(ref), _flat(cand)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(num / np.maximum(den, 1e-12)))


def top1(ref: Sequence[Array], cand: Sequence[Array], inputs: Sequence[tuple] = ()) -> float:
    agree = [int(np.argmax(r, -1).reshape(-1)[0] == np.argmax(c, -1).reshape(-1)[0])
             for r, c in zip(ref, cand)]
    return float(np.mean(agree))


def perplexity_of(logits: Sequence[Array], inputs: Sequence[tuple]) -> float:
    """Perplexity of next-token prediction: logits (1, T, V) against tokens (1, T)."""
    nll, count = 0.0, 0
    for lg, inp in zip(logits, inputs):
        lg = np.asarray(lg, dtype=np.float64).reshape(-1, np.asarray(lg).shape[-1])[:-1]
        tokens = np.asarray(inp[0]).reshape(-1)[1:]
        lg = lg - lg.max(-1, keepdims=True)
        logp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
        nll -= float(logp[np.arange(len(tokens)), tokens].sum())
        count += len(tokens)
    return math.exp(nll / max(count, 1))


def perplexity(ref: Sequence[Array], cand: Sequence[Array], inputs: Sequence[tuple]) -> float:
    return min(1.0, perplexity_of(ref, inputs) / perplexity_of(cand, inputs))


METRICS: dict[str, Callable[..., float]] = {"cosine": cosine, "top1": top1, "perplexity": perplexity}


def score(metric: str, ref: Sequence[Array], cand: Sequence[Array], inputs: Sequence[tuple]) -> float:
    """The model's own accuracy metric of ``cand`` against ``ref`` (1.0 = identical)."""
    return METRICS[metric](ref, cand, inputs)


def error_stats(ref: Sequence[Array], cand: Sequence[Array]) -> dict:
    """Max absolute error and mean cosine between two output lists."""
    a, b = _flat(ref), _flat(cand)
    return {"max_abs_error": float(np.max(np.abs(a - b))), "cosine": cosine(ref, cand)}


def details(metric: str, ref: Sequence[Array], cand: Sequence[Array], inputs: Sequence[tuple]) -> dict:
    """Score plus the numbers behind it (perplexities for LMs)."""
    out = {"metric": metric, "score": score(metric, ref, cand, inputs), **error_stats(ref, cand)}
    if metric == "perplexity":
        out["ppl_reference"] = perplexity_of(ref, inputs)
        out["ppl_candidate"] = perplexity_of(cand, inputs)
    return out
