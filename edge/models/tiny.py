"""Small deterministic zoo models: tiny-mlp and tiny-cnn (MobileNet-like).

Weights come from a fixed seed so every process builds the same model; data are
deterministic and split into disjoint calibration and evaluation sets.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import ModelSpec

SEED = 0


class TinyMLP(nn.Module):
    """64 -> 128 -> 128 -> 10 classifier."""

    def __init__(self, in_features: int = 64, hidden: int = 128, classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, 64) -> (N, 10)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv + BN + ReLU6, then 1x1 pointwise conv + BN + ReLU6."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.clamp(self.bn1(self.dw(x)), 0.0, 6.0)
        return torch.clamp(self.bn2(self.pw(x)), 0.0, 6.0)


class TinyCNN(nn.Module):
    """MobileNet-v1-like image classifier: (N, 3, 32, 32) -> (N, 10) logits."""

    def __init__(self, classes: int = 10, width: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, 2, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width)
        self.blocks = nn.Sequential(
            DepthwiseSeparable(width, 2 * width, 1),
            DepthwiseSeparable(2 * width, 4 * width, 2),
            DepthwiseSeparable(4 * width, 4 * width, 1),
            DepthwiseSeparable(4 * width, 8 * width, 2),
        )
        self.head = nn.Linear(8 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.clamp(self.stem_bn(self.stem(x)), 0.0, 6.0)
        x = self.blocks(x)
        x = x.mean(dim=(2, 3))
        return self.head(x)


def _init_bn(model: nn.Module, gen: torch.Generator) -> None:
    # Non-trivial running statistics, so folding and quantization have real work to do.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def _images(n: int, seed: int) -> list[tuple[torch.Tensor]]:
    """Deterministic smooth images (sums of random low-frequency gratings), (1, 3, 32, 32)."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    out = []
    for _ in range(n):
        img = torch.zeros(3, 32, 32)
        for _ in range(3):
            fx, fy, phase = (torch.rand(3, generator=gen) * torch.tensor([6.0, 6.0, 6.28])).tolist()
            amp = torch.rand(3, 1, 1, generator=gen)
            img += amp * torch.sin(6.28 * (fx * xx + fy * yy) + phase)
        img += 0.1 * torch.randn(3, 32, 32, generator=gen)
        out.append((img.unsqueeze(0),))
    return out


def build_tiny_mlp() -> TinyMLP:
    torch.manual_seed(SEED)
    return TinyMLP().eval()


def build_tiny_cnn() -> TinyCNN:
    torch.manual_seed(SEED)
    model = TinyCNN()
    for m in model.modules():  # He init keeps the signal alive through the blocks
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    _init_bn(model, torch.Generator().manual_seed(SEED + 1))
    model.eval()
    _center_head(model, torch.cat([x for (x,) in _images(64, SEED + 20)]))
    return model


@torch.no_grad()
def _center_head(model: TinyCNN, images: torch.Tensor) -> None:
    """Center the head's input and scale it so that classes split the data between them.

    With random weights the shared mean feature dominates every logit and one class wins
    everywhere; subtracting it (and scaling by the mean feature spread) makes top-1 agreement a
    meaningful test of compression damage.
    """
    feats = model.blocks(torch.clamp(model.stem_bn(model.stem(images)), 0.0, 6.0)).mean(dim=(2, 3))
    weight = model.head.weight / feats.std(0).mean().clamp(min=1e-6)  # one scalar: no channel blows up
    model.head.weight.copy_(weight)
    model.head.bias.copy_(-(weight @ feats.mean(0)))


def tiny_mlp() -> ModelSpec:
    gen = torch.Generator().manual_seed(SEED + 10)
    data = [(torch.randn(1, 64, generator=gen),) for _ in range(192)]
    return ModelSpec(
        name="tiny-mlp",
        model=build_tiny_mlp(),
        example_inputs=data[0],
        input_names=["x"],
        output_names=["logits"],
        calib_inputs=data[:64],
        eval_inputs=data[64:],
        metric="top1",
        description="3-layer MLP classifier, 64 features -> 10 classes (26 k params)",
        rebuild=build_tiny_mlp,
    )


def tiny_cnn() -> ModelSpec:
    calib = _images(64, SEED + 20)
    evals = _images(128, SEED + 21)
    return ModelSpec(
        name="tiny-cnn",
        model=build_tiny_cnn(),
        example_inputs=evals[0],
        input_names=["image"],
        output_names=["logits"],
        calib_inputs=calib,
        eval_inputs=evals,
        metric="top1",
        description="MobileNet-like depthwise-separable CNN, 3x32x32 image -> 10 classes",
        rebuild=build_tiny_cnn,
    )
