"""A held-out model for benchmarks/predicted_vs_measured.py: never used to shape the cost model
or its probes. Loaded as a user model file (``benchmarks/heldout_model.py:heldout``).

A small hybrid: a conv stem (3x3 conv, BatchNorm, ReLU, depthwise 3x3 + pointwise 1x1, GroupNorm),
the feature map flattened into 64 tokens of width 96, two pre-norm transformer-style blocks
(LayerNorm, 4-head self-attention, a 96 -> 256 -> 96 GELU MLP) and a linear head: its own mix of
convolutions, matmuls and normalizations, at shapes none of the zoo models has.
"""
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int = 96, heads: int = 4, hidden: int = 256):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (1, T, dim)
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5, dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))


class HeldOut(nn.Module):
    def __init__(self, classes: int = 12):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 48, 3, 2, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(),
                                  nn.Conv2d(48, 48, 3, 1, 1, groups=48, bias=False), nn.Conv2d(48, 96, 1),
                                  nn.GroupNorm(8, 96), nn.ReLU(), nn.MaxPool2d(2))
        self.blocks = nn.Sequential(Block(), Block())
        self.norm = nn.LayerNorm(96)
        self.head = nn.Linear(96, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (1, 3, 32, 32) -> (1, classes)
        tokens = self.stem(x).flatten(2).transpose(1, 2)  # (1, 64, 96)
        return self.head(self.norm(self.blocks(tokens)).mean(dim=1))


def heldout():
    torch.manual_seed(0)
    return HeldOut().eval(), (torch.randn(1, 3, 32, 32),)
