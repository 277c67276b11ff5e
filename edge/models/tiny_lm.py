"""tiny-lm: a small Llama-style decoder-only language model (fixed seed).

RMSNorm, rotary position embeddings, causal multi-head attention and a SwiGLU
feed-forward block, written with plain tensor ops so every backend can export it.
Input ``tokens`` (1, SEQ_LEN) int64 -> ``logits`` (1, SEQ_LEN, VOCAB) float32.
Evaluation text is sampled from the fp32 model itself, so its perplexity is low
on it and any damage done by compression shows as a rise in perplexity.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from .base import ModelSpec
from .llama import FeedForward, RMSNorm, _rotate_half  # the same blocks as the KV-cache decoder

SEED = 0
VOCAB = 256
SEQ_LEN = 32
DIM = 96
HEADS = 4
LAYERS = 3
FFN = 256


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, seq_len: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        inv_freq = 1.0 / (10000 ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim))
        angles = torch.outer(torch.arange(seq_len).float(), inv_freq)
        emb = torch.cat((angles, angles), dim=-1)  # (T, head_dim)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)
        mask = torch.full((seq_len, seq_len), float("-inf")).triu(1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        b, t, d = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        cos, sin = self.cos[:t], self.sin[:t]
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        probs = torch.softmax(scores + self.mask[:t, :t], dim=-1)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, d)
        return self.o_proj(out)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int, seq_len: int):
        super().__init__()
        self.attn_norm = RMSNorm(dim)
        self.attn = Attention(dim, heads, seq_len)
        self.ffn_norm = RMSNorm(dim)
        self.ffn = FeedForward(dim, ffn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.ffn(self.ffn_norm(x))


class TinyLM(nn.Module):
    def __init__(self, vocab: int = VOCAB, dim: int = DIM, heads: int = HEADS,
                 layers: int = LAYERS, ffn: int = FFN, seq_len: int = SEQ_LEN):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList([Block(dim, heads, ffn, seq_len) for _ in range(layers)])
        self.norm = RMSNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T) int64 -> (B, T, V)
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


def build_tiny_lm() -> TinyLM:
    torch.manual_seed(SEED)
    model = TinyLM()
    with torch.no_grad():  # sharper output distributions than default init
        model.lm_head.weight.mul_(4.0)
    return model.eval()


@torch.no_grad()
def sample_sequences(model: nn.Module, n: int, seed: int) -> list[tuple[torch.Tensor]]:
    """Sample ``n`` sequences of SEQ_LEN tokens from ``model`` (temperature 1, fixed seed)."""
    gen = torch.Generator().manual_seed(seed)
    seqs = torch.zeros(n, SEQ_LEN, dtype=torch.long)
    seqs[:, 0] = torch.randint(0, VOCAB, (n,), generator=gen)
    for t in range(1, SEQ_LEN):
        probs = torch.softmax(model(seqs)[:, t - 1], dim=-1)
        seqs[:, t] = torch.multinomial(probs, 1, generator=gen).squeeze(1)
    return [(seqs[i : i + 1].clone(),) for i in range(n)]


SAMPLES = Path(__file__).resolve().parent / "weights" / "tiny_lm_samples.pt"


def sampled_text(model: nn.Module) -> dict[str, torch.Tensor]:
    """The calibration and evaluation sequences (32 each) sampled from ``model``, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the sampled tokens must not depend on the host's thread count
    try:
        return {"calib": torch.cat([x[0] for x in sample_sequences(model, 32, SEED + 30)]),
                "eval": torch.cat([x[0] for x in sample_sequences(model, 32, SEED + 31)])}
    finally:
        torch.set_num_threads(threads)


def _shipped_text() -> dict[str, torch.Tensor]:
    """The sampled sequences as shipped (sampling at load cost seconds, minutes on a busy host);
    ``scripts/sample_tiny_lm.py`` writes them and a test checks they are what sampling gives."""
    return torch.load(SAMPLES, map_location="cpu", weights_only=True)


def tiny_lm() -> ModelSpec:
    model = build_tiny_lm()
    text = _shipped_text()
    return ModelSpec(
        name="tiny-lm",
        model=model,
        example_inputs=(torch.zeros(1, SEQ_LEN, dtype=torch.long),),
        input_names=["tokens"],
        output_names=["logits"],
        calib_inputs=[(row[None].clone(),) for row in text["calib"]],
        eval_inputs=[(row[None].clone(),) for row in text["eval"]],
        metric="perplexity",
        description=f"Llama-style decoder LM: {LAYERS} layers, dim {DIM}, {HEADS} heads, "
        f"vocab {VOCAB}, context {SEQ_LEN}",
        rebuild=build_tiny_lm,
    )
