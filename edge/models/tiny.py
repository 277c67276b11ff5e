"""Small deterministic zoo models: tiny-mlp and tiny-cnn (MobileNet-like).

tiny-mlp's weights come from a fixed seed. tiny-cnn is a real (small) trained classifier:
its weights, trained by ``scripts/train_tiny_cnn.py`` on a synthetic oriented-grating task,
ship in ``weights/tiny_cnn.pt``. Data are deterministic and split into disjoint
calibration and evaluation sets (and a training set for tiny-cnn).
"""
from __future__ import annotations

from pathlib import Path

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


CLASSES = 10
WEIGHTS = Path(__file__).parent / "weights" / "tiny_cnn.pt"
# Seeds of the image sets: training (scripts/train_tiny_cnn.py), calibration, evaluation.
TRAIN_SEED, CALIB_SEED, EVAL_SEED = 1000, SEED + 20, SEED + 21


def oriented_gratings(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A synthetic 10-class image task: (n, 3, 32, 32) images and (n,) labels.

    The label is the orientation bin (18 degrees each) of the dominant grating; weaker
    distractor gratings, a colour cast, a random patch and pixel noise make it non-trivial.
    """
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    labels = torch.randint(0, CLASSES, (n,), generator=gen)
    images = torch.empty(n, 3, 32, 32)
    for i in range(n):
        theta = (labels[i] + 0.15 + 0.7 * torch.rand(1, generator=gen)) * torch.pi / CLASSES
        img = _grating(xx, yy, theta, gen, 1.0)
        for _ in range(2):
            img = img + _grating(xx, yy, torch.rand(1, generator=gen) * torch.pi, gen, 0.3)
        img = img + 0.4 * torch.randn(3, 1, 1, generator=gen)
        x0, y0 = torch.randint(0, 24, (2,), generator=gen).tolist()
        img[:, y0:y0 + 8, x0:x0 + 8] += 0.5 * torch.randn(3, 1, 1, generator=gen)
        images[i] = img + 0.15 * torch.randn(3, 32, 32, generator=gen)
    return images, labels


def _grating(xx, yy, theta, gen, amplitude: float) -> torch.Tensor:
    freq = 2.0 + 3.0 * torch.rand(1, generator=gen)
    phase = 6.28 * torch.rand(1, generator=gen)
    wave = torch.sin(torch.pi * freq * (xx * torch.cos(theta) + yy * torch.sin(theta)) + phase)
    colour = 0.5 + torch.rand(3, 1, 1, generator=gen)
    return amplitude * colour * wave


def _images(n: int, seed: int) -> list[tuple[torch.Tensor]]:
    images, _ = oriented_gratings(n, seed)
    return [(images[i : i + 1],) for i in range(n)]


def build_tiny_mlp() -> TinyMLP:
    torch.manual_seed(SEED)
    return TinyMLP().eval()


def build_tiny_cnn() -> TinyCNN:
    """TinyCNN with the weights trained on :func:`oriented_gratings` (shipped in weights/)."""
    model = TinyCNN()
    model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    return model.eval()


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
    calib = _images(64, CALIB_SEED)
    evals = _images(128, EVAL_SEED)
    return ModelSpec(
        name="tiny-cnn",
        model=build_tiny_cnn(),
        example_inputs=evals[0],
        input_names=["image"],
        output_names=["logits"],
        calib_inputs=calib,
        eval_inputs=evals,
        metric="top1",
        description="MobileNet-like depthwise-separable CNN trained on oriented gratings, 3x32x32 -> 10 classes",
        rebuild=build_tiny_cnn,
    )
