"""Fixtures for technique tests: zoo specs and host-side scoring on evaluation inputs."""
from __future__ import annotations

import io

import pytest
import torch

from edge.evaluate import score
from edge.models import load_model

# Two cores shared by parallel jobs: one intra-op thread avoids oversubscription (4-5x faster here).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_lm():
    return load_model("tiny-lm")


@pytest.fixture(scope="session")
def tiny_cnn():
    return load_model("tiny-cnn")


@pytest.fixture(scope="session")
def tiny_mlp():
    return load_model("tiny-mlp")


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
