"""A Llama-architecture decoder written with plain tensor ops, with a static KV cache.

One module serves every backend:

- ``forward(tokens)``: the whole sequence, causal, no cache: ``(1, T) -> (1, T, V)`` logits.
  Perplexity, sensitivity analysis and the eager reference use it.
- ``step(tokens, input_pos, k_cache, v_cache)``: the cache as explicit inputs and outputs
  (static shapes, no in-place writes, so TorchScript and ONNX/TFLite can capture it). Prefill
  is ``step`` with the prompt at ``input_pos = 0``; decode is ``step`` with one token.
  Caches are ``(layers, kv_heads, context, head_dim)``; new keys/values are written with a
  one-hot blend, which every exporter lowers to plain arithmetic.

Module names follow Hugging Face (``q_proj``, ``gate_proj``, ``embed_tokens``, ``lm_head``)
so compression groups find them; RoPE is the non-interleaved (``rotate_half``) form that
Hugging Face checkpoints use, so their weights load unchanged.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class LlamaConfig:
    """Architecture plus the two export sizes: ``prefill_tokens`` (P) and ``context`` (C)."""

    vocab: int
    dim: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    qkv_bias: bool = False  # Qwen2 has biases on the q/k/v projections
    prefill_tokens: int = 32
    context: int = 128

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    def cache_shape(self) -> tuple[int, int, int, int]:
        """One of the two cache tensors (keys or values): (layers, kv_heads, context, head_dim)."""
        return (self.layers, self.kv_heads, self.context, self.head_dim)

    def kv_cache_bytes(self, bytes_per_element: int = 4) -> int:
        """Keys + values for the whole context: layers x 2 x kv_heads x context x head_dim x bytes."""
        return 2 * math.prod(self.cache_shape()) * bytes_per_element

    def to_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (T, head_dim) for integer ``positions`` (T,)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    emb = torch.cat((angles, angles), dim=-1)
    return emb.cos(), emb.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, T, H, D); cos/sin (T, D), computed in fp32 and applied in x's dtype."""
    return x * cos.to(x.dtype)[:, None, :] + _rotate_half(x) * sin.to(x.dtype)[:, None, :]


def repeat_kv(x: torch.Tensor, rep: int) -> torch.Tensor:
    """(B, S, Hkv, D) -> (B, S, Hkv * rep, D); query head h reads kv head h // rep."""
    if rep == 1:
        return x
    b, s, h, d = x.shape
    return x[:, :, :, None, :].expand(b, s, h, rep, d).reshape(b, s, h * rep, d)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.heads, cfg.kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.heads * cfg.head_dim, cfg.dim, bias=False)

    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """q (B, T, H, D), k and v (B, T, Hkv, D), RoPE applied to q and k."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """q (B, T, H, D); k, v (B, S, Hkv, D); mask (T, S) bool, True = may attend -> (B, T, H*D)."""
        rep = self.heads // self.kv_heads
        k, v = repeat_kv(k, rep).transpose(1, 2), repeat_kv(v, rep).transpose(1, 2)
        scores = torch.matmul(q.transpose(1, 2), k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~mask, float("-inf"))
        out = torch.matmul(torch.softmax(scores, dim=-1), v)  # (B, H, T, D)
        b, _, t, _ = out.shape
        return out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn = FeedForward(cfg.dim, cfg.ffn)


class Llama(nn.Module):
    """Decoder-only LM; see the module docstring for the two call forms.

    ``model.half()`` keeps working: logits come out fp32, the caches keep their own dtype.
    """

    handles_half = True  # edge.compress's fp16 converts it in place instead of wrapping it

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.dim)
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg.layers)])
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(1, T) int64 -> (1, T, V) logits; causal attention over the sequence itself."""
        t = tokens.shape[1]
        cos, sin = rope(torch.arange(t), self.cfg.head_dim, self.cfg.rope_base)
        pos = torch.arange(t)
        mask = pos[None, :] <= pos[:, None]
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            q, k, v = layer.attn.project(layer.attn_norm(x), cos, sin)
            x = x + layer.attn.o_proj(layer.attn.attend(q, k, v, mask))
            x = x + layer.ffn(layer.ffn_norm(x))
        return self.lm_head(self.norm(x)).float()

    def step(self, tokens: torch.Tensor, input_pos: torch.Tensor, k_cache: torch.Tensor,
             v_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (1, T) at positions input_pos[0] .. +T-1; caches (L, Hkv, C, D) in and out.

        Returns logits (1, T, V) and the updated caches. Cache slots after the last written
        position hold stale values; the mask never lets a query read them.
        """
        ctx = self.step_context(input_pos, tokens.shape[1], k_cache.dtype)
        new_k, new_v = [], []
        x = self.embed_tokens(tokens)
        for i in range(len(self.layers)):
            x, kc, vc = self.layer_step(i, x, k_cache[i], v_cache[i], ctx)
            new_k.append(kc)
            new_v.append(vc)
        return self.lm_head(self.norm(x)).float(), torch.stack(new_k), torch.stack(new_v)

    def step_context(self, input_pos: torch.Tensor, t: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """What every layer of a step at positions input_pos[0] .. +t-1 shares: RoPE's cos and
        sin, the causal mask over the cache (T, C), the one-hot write rows (T, C) and keep (C, 1)."""
        positions = input_pos[0] + torch.arange(t)
        cos, sin = rope(positions, self.cfg.head_dim, self.cfg.rope_base)
        slots = torch.arange(self.cfg.context)
        mask = slots[None, :] <= positions[:, None]  # (T, C)
        write = (slots[None, :] == positions[:, None]).to(dtype)  # (T, C) one-hot rows
        keep = 1.0 - write.sum(0)[:, None]  # (C, 1): 0 where a new token lands
        return cos, sin, mask, write, keep

    def layer_step(self, i: int, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                   ctx: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Layer ``i`` of a step: x (1, T, dim), this layer's caches (Hkv, C, D) -> x and the updated caches."""
        cos, sin, mask, write, keep = ctx
        layer = self.layers[i]
        q, k, v = layer.attn.project(layer.attn_norm(x), cos, sin)
        # (Hkv, C, D) = (Hkv, C, D) * keep + (C, T) @ (Hkv, T, D)
        kc = k_cache * keep + torch.matmul(write.t(), k[0].transpose(0, 1).to(k_cache.dtype))
        vc = v_cache * keep + torch.matmul(write.t(), v[0].transpose(0, 1).to(v_cache.dtype))
        att = layer.attn.attend(q, kc.transpose(0, 1)[None].to(q.dtype), vc.transpose(0, 1)[None].to(q.dtype), mask)
        x = x + layer.attn.o_proj(att)
        x = x + layer.ffn(layer.ffn_norm(x))
        return x, kc, vc

    def empty_cache(self) -> tuple[torch.Tensor, torch.Tensor]:
        shape = self.cfg.cache_shape()
        return torch.zeros(shape), torch.zeros(shape)


class StepModule(nn.Module):
    """``forward = Llama.step`` returning the last position's logits (1, V), for exporters."""

    def __init__(self, llama: Llama):
        super().__init__()
        self.llama = llama

    def forward(self, tokens, input_pos, k_cache, v_cache):
        logits, k_cache, v_cache = self.llama.step(tokens, input_pos, k_cache, v_cache)
        return logits[:, -1, :], k_cache, v_cache

    def example_inputs(self, tokens: int) -> tuple[torch.Tensor, ...]:
        """Inputs for a step of ``tokens`` tokens at position 0 with an empty cache."""
        k, v = self.llama.empty_cache()
        return (torch.zeros(1, tokens, dtype=torch.long), torch.tensor([0]), k, v)


STEP_INPUTS = ["tokens", "input_pos", "k_cache", "v_cache"]
STEP_OUTPUTS = ["logits", "k_cache_out", "v_cache_out"]


class ChunkModule(nn.Module):
    """A part of :class:`StepModule` for one token, for exporters that convert a step in parts:
    the embedding (token ids in) when ``embed``, layers ``start`` .. ``stop - 1`` with their
    share of the caches, the final norm and head (logits (1, V) out) when ``head``. Between
    parts the hidden state travels as (1, dim), a shape no converter re-lays out.

    Inputs, in order: ``tokens`` (1, 1) or ``hidden`` (1, dim); with layers ``input_pos`` (1,),
    ``k_cache`` and ``v_cache`` (stop - start, Hkv, C, D). Outputs: ``logits`` or
    ``hidden_out``; with layers ``k_cache_out`` and ``v_cache_out``.
    """

    def __init__(self, llama: Llama, start: int, stop: int, embed: bool, head: bool):
        super().__init__()
        if not (0 <= start <= stop <= llama.cfg.layers) or (start == stop and not (embed or head)):
            raise ValueError(f"a chunk needs layers within 0..{llama.cfg.layers} or the embedding or head, "
                             f"found layers {start}..{stop}, embed={embed}, head={head}")
        self.llama, self.start, self.stop, self.embed, self.head = llama, start, stop, embed, head

    @property
    def input_names(self) -> list[str]:
        return ["tokens" if self.embed else "hidden"] + (["input_pos", "k_cache", "v_cache"] if self.stop > self.start else [])

    @property
    def output_names(self) -> list[str]:
        return ["logits" if self.head else "hidden_out"] + (["k_cache_out", "v_cache_out"] if self.stop > self.start else [])

    def forward(self, first, input_pos=None, k_cache=None, v_cache=None):
        m = self.llama
        x = m.embed_tokens(first) if self.embed else first[:, None, :]
        outs = []
        if self.stop > self.start:
            ctx = m.step_context(input_pos, 1, k_cache.dtype)
            new_k, new_v = [], []
            for j, i in enumerate(range(self.start, self.stop)):
                x, kc, vc = m.layer_step(i, x, k_cache[j], v_cache[j], ctx)
                new_k.append(kc)
                new_v.append(vc)
            outs = [torch.stack(new_k), torch.stack(new_v)]
        last = m.lm_head(m.norm(x)).float() if self.head else x
        return (last[:, -1, :], *outs)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """Inputs at position 0 with an empty cache."""
        cfg = self.llama.cfg
        first = torch.zeros(1, 1, dtype=torch.long) if self.embed else torch.zeros(1, cfg.dim)
        if self.stop == self.start:
            return (first,)
        shape = (self.stop - self.start, *cfg.cache_shape()[1:])
        return (first, torch.tensor([0]), torch.zeros(shape), torch.zeros(shape))


@torch.no_grad()
def greedy(model: Llama, prompt: torch.Tensor, new_tokens: int) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy decoding with the cached ``step`` path: (new token ids, logits (V,) per new token)."""
    k, v = model.empty_cache()
    logits, k, v = model.step(prompt, torch.tensor([0]), k, v)
    last = logits[0, -1]
    out, steps = [], []
    pos = prompt.shape[1]
    for _ in range(new_tokens):
        steps.append(last)
        tok = int(torch.argmax(last))
        out.append(tok)
        if len(out) == new_tokens:
            break
        logits, k, v = model.step(torch.tensor([[tok]]), torch.tensor([pos]), k, v)
        last = logits[0, -1]
        pos += 1
    return out, steps


def load_hf_state_dict(model: Llama, state: dict[str, torch.Tensor]) -> Llama:
    """Copy a Hugging Face ``LlamaForCausalLM`` (or Mistral/Qwen2) state dict into ``model`` (names mapped)."""
    mapping = {"model.embed_tokens.weight": "embed_tokens.weight", "model.norm.weight": "norm.weight",
               "lm_head.weight": "lm_head.weight"}
    per_layer = {"self_attn.q_proj": "attn.q_proj", "self_attn.k_proj": "attn.k_proj",
                 "self_attn.v_proj": "attn.v_proj", "self_attn.o_proj": "attn.o_proj",
                 "mlp.gate_proj": "ffn.gate_proj", "mlp.up_proj": "ffn.up_proj",
                 "mlp.down_proj": "ffn.down_proj", "input_layernorm": "attn_norm",
                 "post_attention_layernorm": "ffn_norm"}
    for i in range(model.cfg.layers):
        for hf, ours in per_layer.items():
            mapping[f"model.layers.{i}.{hf}.weight"] = f"layers.{i}.{ours}.weight"
            if model.cfg.qkv_bias and hf.split(".")[-1] in ("q_proj", "k_proj", "v_proj"):
                mapping[f"model.layers.{i}.{hf}.bias"] = f"layers.{i}.{ours}.bias"
    ours_state = {}
    for hf_name, tensor in state.items():
        if hf_name in mapping:
            ours_state[mapping[hf_name]] = tensor.to(torch.float32)
    if model.cfg.tie_embeddings:
        ours_state.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(ours_state, strict=False)
    missing = [m for m in missing if not (model.cfg.tie_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"weights do not fit the architecture: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model
