"""The composite calibration probes' models: small whole networks built the way real ones are.

Each is a :class:`~edge.calibrate_probes.Probe` of a composite kind; its ``rows``, ``width_in``,
``width_out`` and ``layers`` set the shapes (see the table in :mod:`edge.calibrate_probes`):

- ``mlp``: (rows, width_in) -> Linear(width_in, width_out) + ReLU, ``layers - 2`` x
  Linear(width_out, width_out) + ReLU, Linear(width_out, 16); every Linear with a bias.
- ``convnet``: (1, 3, rows, rows) -> a 3x3 stride-2 stem conv to ``width_in`` channels, BatchNorm,
  ReLU6; ``layers`` depthwise-separable blocks (depthwise 3x3, BN, ReLU6, pointwise 1x1, BN, ReLU6);
  a global mean and Linear(width_in, 16).
- ``transformer``: (1, rows, width_in) tokens through ``layers`` pre-norm blocks (LayerNorm,
  fused QKV projection with biases, width_in // 32 heads, softmax attention, output projection,
  LayerNorm, a GELU MLP of ``width_out``).
- ``llamablock``: the same tokens through ``layers`` Llama blocks (RMSNorm, q/k/v/o without bias,
  rotary position embedding, a causal mask, softmax attention, a SwiGLU MLP of ``width_out``).

Weights come from ``gen`` and are scaled by fan-in so activations stay near unit variance.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

OUT_FEATURES = 16
HEAD_DIM = 32


def composite_module(probe: Any, gen: Any):
    """The torch module of a composite ``probe`` (weights drawn from ``gen``)."""
    def init(module: nn.Module) -> nn.Module:
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                m.weight.data = torch.randn(m.weight.shape, generator=gen) / fan_in ** 0.5
                if m.bias is not None:
                    m.bias.data = 0.01 * torch.randn(m.bias.shape, generator=gen)
        return module.eval()

    d, hidden, n = probe.width_in, probe.width_out, probe.layers
    if probe.kind == "mlp":
        layers: list[nn.Module] = [nn.Linear(d, hidden), nn.ReLU()]
        for _ in range(max(n - 2, 0)):
            layers += [nn.Linear(hidden, hidden), nn.ReLU()]
        return init(nn.Sequential(*layers, nn.Linear(hidden, OUT_FEATURES)))
    if probe.kind == "convnet":
        return init(ConvNet(d, n))
    if probe.kind == "transformer":
        return init(nn.Sequential(*(EncoderBlock(d, hidden) for _ in range(n))))
    if probe.kind == "llamablock":
        return init(nn.Sequential(*(LlamaBlock(d, hidden, probe.rows) for _ in range(n))))
    raise ValueError(f"not a composite probe kind: {probe.kind}")


class ConvNet(nn.Module):
    """A 3-channel stem and depthwise-separable blocks, MobileNet-style, at stride 1 after the stem."""

    def __init__(self, channels: int, blocks: int):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, 2, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(channels)
        self.dw = nn.ModuleList(nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False)
                                for _ in range(blocks))
        self.pw = nn.ModuleList(nn.Conv2d(channels, channels, 1, bias=False) for _ in range(blocks))
        self.bn = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(2 * blocks))
        self.head = nn.Linear(channels, OUT_FEATURES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.clamp(self.stem_bn(self.stem(x)), 0.0, 6.0)
        for i, (dw, pw) in enumerate(zip(self.dw, self.pw)):
            x = torch.clamp(self.bn[2 * i](dw(x)), 0.0, 6.0)
            x = torch.clamp(self.bn[2 * i + 1](pw(x)), 0.0, 6.0)
        return self.head(x.mean(dim=(2, 3)))


class EncoderBlock(nn.Module):
    """Pre-norm: x + proj(attention(LN(x))), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.heads = max(dim // HEAD_DIM, 1)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, T, dim)
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))


class LlamaBlock(nn.Module):
    """RMSNorm, rotary attention under a causal mask, RMSNorm, SwiGLU MLP; residuals around both."""

    def __init__(self, dim: int, hidden: int, positions: int):
        super().__init__()
        self.heads, self.head_dim = max(dim // HEAD_DIM, 1), min(dim, HEAD_DIM)
        self.norm1, self.norm2 = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.ones(dim))
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim, bias=False) for _ in range(4))
        self.gate, self.up = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)
        inv = 1.0 / (10000 ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim))
        angles = torch.outer(torch.arange(positions).float(), inv)
        emb = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)
        self.register_buffer("mask", torch.full((positions, positions), float("-inf")).triu(1), persistent=False)

    @staticmethod
    def _norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weight

    def _rope(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * self.cos + rotated * self.sin

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, T, dim)
        b, t, d = x.shape
        h = self._norm(x, self.norm1)
        q, k, v = (p(h).view(b, t, self.heads, self.head_dim).transpose(1, 2) for p in (self.q, self.k, self.v))
        scores = self._rope(q) @ self._rope(k).transpose(-2, -1) / math.sqrt(self.head_dim)
        att = torch.softmax(scores + self.mask[:t, :t], dim=-1) @ v
        x = x + self.o(att.transpose(1, 2).reshape(b, t, d))
        h = self._norm(x, self.norm2)
        return x + self.down(nn.functional.silu(self.gate(h)) * self.up(h))
