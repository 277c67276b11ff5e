"""GGML formats for the llamacpp backend: the GGUF file edge writes, and the rounding GGML's
types apply, so the host's eager model computes with what llama.cpp holds.

- :func:`write_gguf`: an edge :class:`~edge.models.llama.Llama` as a GGUF (architecture
  ``llama``, llama.cpp's tensor names and q/k row order for RoPE, no tokenizer).
- :func:`round_weights`: weights of layer groups through GGML blocks (quantize, dequantize).
- :func:`round_kv_cache`: keys, values (and the query, as llama.cpp's CPU attention converts
  it) through the KV cache's type, in llama.cpp's layout and Hadamard-rotated basis. On models
  of one or two layers it reproduces llama.cpp's q8_0-cache logits to float rounding; in deep
  models a few block roundings fall the other way and drift apart, so it matches llama.cpp's
  rounding statistically (its perplexity), not bit for bit.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import UnsupportedError
from .kv_rounding import attention_layers, round_fp16, round_kv, round_q8_0

if TYPE_CHECKING:  # annotations only
    from ..models.base import ModelSpec

# our Llama module names -> GGUF tensor names (per layer)
_LAYER_TENSORS = {"attn.q_proj": "attn_q", "attn.k_proj": "attn_k", "attn.v_proj": "attn_v",
                  "attn.o_proj": "attn_output", "ffn.gate_proj": "ffn_gate", "ffn.up_proj": "ffn_up",
                  "ffn.down_proj": "ffn_down", "attn_norm": "attn_norm", "ffn_norm": "ffn_norm"}
# GGUF tensor name part -> the compression group it belongs to (for the manifest's type table)
_GROUPS = {"token_embd": "embedding", "output": "head", "output_norm": "norm", "attn_norm": "norm",
           "ffn_norm": "norm", "attn_q": "attention", "attn_k": "attention", "attn_v": "attention",
           "attn_output": "attention", "ffn_gate": "ffn", "ffn_up": "ffn", "ffn_down": "ffn"}


def round_weights(model: torch.nn.Module, groups, qtype: str, typed: dict[str, str]) -> torch.nn.Module:
    """Round the weights of ``groups`` through GGML ``qtype`` blocks in place (quantize, then
    dequantize), so the eager model computes with the weights the GGUF will hold; writing the
    GGUF quantizes them again to the same bytes (GGML's block quantizers are idempotent).
    A weight tied between embedding and head follows the embedding's type once it has one."""
    import gguf

    if qtype == "F32" or not hasattr(model, "layers"):
        return model
    owners = {"embedding": [model.embed_tokens], "head": [model.lm_head],
              "attention": [m for b in model.layers for m in (b.attn.q_proj, b.attn.k_proj, b.attn.v_proj,
                                                               b.attn.o_proj)],
              "ffn": [m for b in model.layers for m in (b.ffn.gate_proj, b.ffn.up_proj, b.ffn.down_proj)]}
    tied = model.lm_head.weight is model.embed_tokens.weight
    seen: set[int] = set()
    for group in groups:
        if group == "head" and tied and "embedding" in typed:
            continue
        for module in owners.get(group, []):
            w = module.weight
            if id(w) in seen:
                continue
            seen.add(id(w))
            with torch.no_grad():
                x = w.detach().float().cpu().numpy()
                if qtype == "F16":
                    y = x.astype(np.float16).astype(np.float32)
                else:
                    kind = gguf.GGMLQuantizationType[qtype]
                    y = gguf.quants.dequantize(gguf.quants.quantize(x, kind), kind).reshape(x.shape)
                w.copy_(torch.from_numpy(np.ascontiguousarray(y)).to(w.dtype))
    return model


def _to_ggml_order(x: torch.Tensor) -> torch.Tensor:
    """(..., D) from Hugging Face's rotate_half order to llama.cpp's (pairs side by side, see _permute)."""
    d = x.shape[-1]
    return x.reshape(*x.shape[:-1], 2, d // 2).transpose(-1, -2).reshape(x.shape)


def _from_ggml_order(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1]
    return x.reshape(*x.shape[:-1], d // 2, 2).transpose(-1, -2).reshape(x.shape)


def _in_ggml_order(fn):
    return lambda x: _from_ggml_order(fn(_to_ggml_order(x)))


def hadamard(n: int) -> torch.Tensor:
    """llama.cpp's orthonormal Walsh-Hadamard matrix (n x n, n a power of 2; Sylvester order, H @ H = I)."""
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / math.sqrt(n)


def _rotated(fn, n: int):
    """``fn`` applied in a Hadamard-rotated basis of ``n``-value groups along the last dim, rotated back."""
    h = hadamard(n)

    def rounded(x: torch.Tensor) -> torch.Tensor:
        y = fn((x.reshape(-1, n).float() @ h).reshape(x.shape))
        return (y.reshape(-1, n) @ h).reshape(x.shape).to(x.dtype)
    return rounded


def _k_rotation(head_dim: int) -> int:
    """The Hadamard size llama.cpp rotates a quantized K cache with: the largest power of 2 that
    divides the head dim (at least 64), 0 when the head dim is no multiple of 64 (no rotation)."""
    if head_dim % 64:
        return 0
    n = 64
    while head_dim % (2 * n) == 0:
        n *= 2
    return n


def round_kv_cache(model: torch.nn.Module, kv_dtype: str) -> torch.nn.Module:
    """The eager model computing with what llama.cpp's cache of ``kv_dtype`` returns.

    Keys and values are rounded to the cache type (q8_0 in 32-value blocks along the head dim,
    keys in llama.cpp's rotary order, whose blocks mix the two halves the model keeps apart).
    The query is rounded too: llama.cpp's CPU attention converts it to the keys' dot-product
    type (fp16 for an f16 cache, q8_0 for q8_0) before multiplying. An f32 cache is exact.
    A quantized cache of a head dim that 64 divides is rotated first, as llama.cpp does to
    spread outliers over each block (``attn_rot_k``/``attn_rot_v``; the environment variable
    ``LLAMA_ATTN_ROT_DISABLE`` turns it off there): query and keys by a Hadamard matrix of
    the largest power of 2 dividing the head dim, values by 64 x 64 blocks (the attention
    output is rotated back, so only the rounding differs).
    """
    if kv_dtype == "fp32":
        return model
    if kv_dtype == "fp16":
        return round_kv(model, round_fp16, round_fp16, round_q=round_fp16)
    layers = attention_layers(model)
    n_k = _k_rotation(layers[0].head_dim) if layers else 0
    qk = _in_ggml_order(_rotated(round_q8_0, n_k) if n_k else round_q8_0)
    v = _rotated(round_q8_0, 64) if n_k else round_q8_0
    return round_kv(model, qk, v, round_q=qk)


def write_gguf(model: torch.nn.Module, spec: ModelSpec, path: Path,
               group_types: dict[str, str] | None = None) -> None:
    """The Llama ``model`` as a GGUF (architecture ``llama``, no tokenizer) at ``path``.

    Weight matrices are f32 unless ``group_types`` names a GGML type for their compression
    group (``{"ffn": "Q5_1", "attention": "Q8_0", "embedding": "Q8_0"}``): those are quantized
    here with gguf's reference quantizers (the same block formats llama.cpp writes). Norms
    stay f32.
    """
    import gguf

    cfg = spec.generation.config
    state = _llama_state(model, cfg)
    types = {g: gguf.GGMLQuantizationType[t] for g, t in (group_types or {}).items()}

    def add(name: str, x: np.ndarray) -> None:
        qtype = types.get(_GROUPS.get(name.split(".")[-2])) if x.ndim == 2 else None
        if qtype is None or qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, x)
        else:
            w.add_tensor(name, gguf.quants.quantize(x, qtype), raw_dtype=qtype)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(spec.name)
    w.add_block_count(cfg.layers)
    w.add_context_length(cfg.context)
    w.add_embedding_length(cfg.dim)
    w.add_feed_forward_length(cfg.ffn)
    w.add_head_count(cfg.heads)
    w.add_head_count_kv(cfg.kv_heads)
    w.add_rope_freq_base(float(cfg.rope_base))
    w.add_layer_norm_rms_eps(float(cfg.norm_eps))
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_vocab_size(cfg.vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_tokenizer_model("none")  # token ids in and out; the host holds the tokenizer
    add("token_embd.weight", state["embed_tokens.weight"])
    for i in range(cfg.layers):
        for ours, theirs in _LAYER_TENSORS.items():
            x = state[f"layers.{i}.{ours}.weight"]
            if ours in ("attn.q_proj", "attn.k_proj"):
                x = _permute(x, cfg.heads if ours == "attn.q_proj" else cfg.kv_heads)
            add(f"blk.{i}.{theirs}.weight", x)
    add("output_norm.weight", state["norm.weight"])
    if not cfg.tie_embeddings:  # tied: llama.cpp reads the output projection from token_embd
        add("output.weight", state["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _llama_state(model: torch.nn.Module, cfg: Any) -> dict[str, np.ndarray]:
    """The plain fp32 weights of an edge Llama, or UnsupportedError naming what does not fit."""
    from ..models.llama import Llama

    if not isinstance(model, Llama):
        raise UnsupportedError(f"llamacpp converts edge's Llama module, found {type(model).__name__}; a technique "
                               "that rewrites modules (e.g. low-rank factorization) cannot be exported to GGUF")
    if cfg.qkv_bias:
        raise UnsupportedError("llamacpp: q/k/v projection biases (Qwen2) are not written to GGUF in this step")
    state = {k: v.detach().float().contiguous().numpy() for k, v in model.state_dict().items()}
    expected = {"embed_tokens.weight": (cfg.vocab, cfg.dim), "norm.weight": (cfg.dim,)}
    for i in range(cfg.layers):
        expected[f"layers.{i}.attn.q_proj.weight"] = (cfg.heads * cfg.head_dim, cfg.dim)
        expected[f"layers.{i}.attn.k_proj.weight"] = (cfg.kv_heads * cfg.head_dim, cfg.dim)
        expected[f"layers.{i}.ffn.up_proj.weight"] = (cfg.ffn, cfg.dim)
    wrong = [f"{k} {tuple(state[k].shape) if k in state else 'missing'} (expected {v})"
             for k, v in expected.items() if k not in state or tuple(state[k].shape) != v]
    if wrong:
        raise UnsupportedError("llamacpp: the model's weights do not match its config (a structural technique "
                               "changed shapes?): " + "; ".join(wrong[:3]))
    return state


def _permute(x: np.ndarray, heads: int) -> np.ndarray:
    """q/k rows from Hugging Face's rotate_half RoPE layout to llama.cpp's (as its convert_hf_to_gguf.py)."""
    return x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def tensor_types(path: Path) -> dict[str, list[str]]:
    """The GGML types in a GGUF file per compression group (``{"ffn": ["Q8_0"], ...}``)."""
    import gguf

    out: dict[str, set] = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        part = t.name.split(".")[-2]
        out.setdefault(_GROUPS.get(part, part), set()).add(t.tensor_type.name)
    return {group: sorted(types) for group, types in sorted(out.items())}
