"""Knowledge distillation into a shallower student, on unlabeled calibration data.

The student is the teacher with only ``keep_layers`` of its repeated blocks (evenly
spaced, so first and last survive), initialised from the teacher's weights, then trained
on CPU for at most ``steps`` steps / ``time_budget_s`` seconds to match the teacher on
``spec.calib_inputs`` (with light augmentation: token swaps for integer inputs, Gaussian
noise for float inputs). Loss: KL on logits (``top1``/``perplexity`` models) or MSE plus
(1 - cosine) on embeddings (``cosine`` models). Evaluation inputs are never seen.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError, UnsupportedError
from .base import CompressContext, TechniqueConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillConfig(TechniqueConfig):
    """Train a ``keep_layers``-deep student from the teacher on calibration data."""

    type_tag = "distill"
    structural = True
    keep_layers: int = 2
    steps: int = 100
    time_budget_s: float = 30.0
    lr: float = 1e-3
    batch_size: int = 8
    temperature: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("keep_layers", "steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"distill: expected {name} as an integer >= 1, found {value!r}")
        self._range("time_budget_s", 0.0, 3600.0)
        self._range("lr", 0.0, 1.0)
        self._range("temperature", 0.0, 100.0)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"distill: expected seed as an integer from 0 to 2^63-1, found {self.seed!r}")

    def label(self) -> str:
        return f"distill to {self.keep_layers} layers ({self.steps} steps)"


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The first ModuleList of >= 2 same-type blocks (transformer layers), with its name."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) >= 2 \
                and len({type(m) for m in module}) == 1:
            return name, module
    raise UnsupportedError(
        f"distill: expected a ModuleList of repeated blocks (transformer layers) in "
        f"{type(model).__name__}, found none")


def truncated_student(teacher: nn.Module, keep_layers: int) -> nn.Module:
    """A copy of ``teacher`` keeping ``keep_layers`` evenly spaced blocks (untrained)."""
    student = copy.deepcopy(teacher)
    name, blocks = find_blocks(student)
    if keep_layers >= len(blocks):
        raise ConfigError(f"distill: expected keep_layers < {len(blocks)} (the teacher's depth), "
                          f"found {keep_layers}")
    idx = torch.linspace(0, len(blocks) - 1, keep_layers).round().long().unique().tolist()
    parent_name, _, child = name.rpartition(".")
    parent = student.get_submodule(parent_name) if parent_name else student
    setattr(parent, child, nn.ModuleList([blocks[i] for i in idx]))
    for module in student.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "num_hidden_layers"):
            config.num_hidden_layers = len(idx)
    return student.eval()


def _augment(inputs: tuple, pool: torch.Tensor, gen: torch.Generator) -> tuple:
    first = inputs[0]
    if first.is_floating_point():
        noise = torch.randn(first.shape, generator=gen) * 0.1 * first.std()
        return (first + noise, *inputs[1:])
    swap = torch.rand(first.shape, generator=gen) < 0.15
    if len(inputs) > 1:  # keep special/padding positions (mask 0) intact
        swap &= inputs[1].bool()
        swap[..., 0] = False
    replacement = pool[torch.randint(0, pool.numel(), first.shape, generator=gen)]
    return (torch.where(swap, replacement, first), *inputs[1:])


def _loss(metric: str, teacher_out: torch.Tensor, student_out: torch.Tensor, temperature: float):
    if metric == "cosine":
        cos = nn.functional.cosine_similarity(student_out, teacher_out, dim=-1).mean()
        return nn.functional.mse_loss(student_out, teacher_out) + (1.0 - cos)
    t = temperature
    log_p = nn.functional.log_softmax(student_out / t, dim=-1)
    q = nn.functional.softmax(teacher_out / t, dim=-1)
    return nn.functional.kl_div(log_p, q, reduction="batchmean") * t * t


def _batches(calib: list[tuple], batch_size: int, gen: torch.Generator):
    while True:
        order = torch.randperm(len(calib), generator=gen).tolist()
        for start in range(0, len(order), batch_size):
            chunk = [calib[i] for i in order[start:start + batch_size]]
            yield tuple(torch.cat(parts, 0) for parts in zip(*chunk))


def apply_distill(model: nn.Module, config: DistillConfig, ctx: CompressContext) -> nn.Module:
    """Return a trained ``keep_layers``-deep student of ``model``."""
    if ctx.spec is None or not ctx.spec.calib_inputs:
        raise ConfigError("distill: expected a model spec with calib_inputs, found none")
    teacher = model.eval()
    student = truncated_student(teacher, config.keep_layers)
    gen = torch.Generator().manual_seed(config.seed)
    calib = list(ctx.spec.calib_inputs)
    pool = torch.cat([c[0].flatten() for c in calib]) if not calib[0][0].is_floating_point() else None
    for p in student.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=0.0)
    start, step, loss = time.monotonic(), 0, torch.tensor(0.0)
    for step, batch in enumerate(_batches(calib, config.batch_size, gen), 1):
        inputs = _augment(batch, pool, gen) if step % 2 == 0 else batch
        with torch.no_grad():
            target = teacher(*inputs)
        loss = _loss(ctx.spec.metric, target, student(*inputs), config.temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= config.steps or time.monotonic() - start > config.time_budget_s:
            break
    log.info("distill: %d steps in %.1f s, final loss %.4f", step, time.monotonic() - start, float(loss))
    for p in student.parameters():
        p.requires_grad_(False)
    return student.eval()
