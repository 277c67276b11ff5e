"""Helpers for technique tests: scoring on evaluation inputs, stored bytes, parameter counts."""
from __future__ import annotations

import io

import torch

from edge.evaluate import score


def _batched(model, inputs) -> list:
    out = model(*[torch.cat(parts, 0) for parts in zip(*inputs)]).float()
    return [out[i:i + 1].numpy() for i in range(len(inputs))]


@torch.no_grad()
def eval_score(spec, model, n: int = 32, batched: bool = True) -> float:
    """The spec's metric of ``model`` against the fp32 model on ``n`` evaluation inputs."""
    inputs = spec.eval_inputs[:n]
    ref = _batched(spec.model, inputs)
    cand = _batched(model, inputs) if batched else [model(*i).float().numpy() for i in inputs]
    return score(spec.metric, ref, cand, inputs)


def state_bytes(model) -> int:
    """Bytes of the serialized state dict (what the weights really take when stored)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
