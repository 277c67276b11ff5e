"""The model zoo and loaders.

``load_model(ref)`` accepts a zoo name, ``path/to/file.py:factory`` or a Hugging Face
model directory and returns a :class:`ModelSpec`.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import ModelLoadError
from .base import ModelSpec

# zoo name -> "module:factory" (imported on first use; minilm pulls in transformers)
ZOO: dict[str, str] = {
    "tiny-mlp": "edge.models.tiny:tiny_mlp",
    "tiny-cnn": "edge.models.tiny:tiny_cnn",
    "tiny-lm": "edge.models.tiny_lm:tiny_lm",
    "minilm": "edge.models.minilm:minilm",
    "tiny-llama": "edge.models.lm:tiny_llama",
    "smollm2-135m": "edge.models.lm:smollm2_135m",
}

ZOO_DESCRIPTIONS: dict[str, str] = {
    "tiny-mlp": "3-layer MLP classifier (64 -> 10), top-1 agreement",
    "tiny-cnn": "MobileNet-like depthwise-separable CNN (3x32x32 -> 10), top-1 agreement",
    "tiny-lm": "Llama-style decoder LM (3 layers, vocab 256, context 32), perplexity",
    "minilm": "pretrained all-MiniLM-L6-v2 sentence embedder (64 tokens -> 384), cosine",
    "tiny-llama": "byte-level Llama decoder with a KV cache (2 layers, prefill 32, context 128), tokens/s",
    "smollm2-135m": "pretrained SmolLM2-135M-Instruct decoder (prefill 128, context 512), tokens/s",
}

_CACHE: dict[str, ModelSpec] = {}


def load_model(ref: str) -> ModelSpec:
    """Resolve a model reference to a ModelSpec (zoo models are cached per process).

    Sets torch's host threads first (:func:`edge.host.configure_torch`): loading a model is
    where edge's own computation starts.
    """
    from ..host import configure_torch

    configure_torch()
    if ref in ZOO:
        if ref not in _CACHE:
            module_name, _, attr = ZOO[ref].partition(":")
            _CACHE[ref] = getattr(importlib.import_module(module_name), attr)()
        return _CACHE[ref]
    if ".py:" in ref:
        from .loaders import load_factory

        return load_factory(ref)
    path = Path(ref).expanduser()
    if path.suffix == ".gguf":
        from .lm import decoder_from_gguf

        return decoder_from_gguf(path)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelLoadError(
                f"expected a Hugging Face model directory with config.json at {path}, found a "
                "directory without one"
            )
        from .loaders import load_hf_dir

        return load_hf_dir(path)
    raise ModelLoadError(
        f"expected a zoo name ({', '.join(ZOO)}), a path/to/file.py:factory, a Hugging Face "
        f"model directory or a .gguf file; found '{ref}'. Run `edge models list` for the zoo."
    )


def list_models() -> list[dict]:
    return [{"name": n, "description": d} for n, d in ZOO_DESCRIPTIONS.items()]


__all__ = ["ModelSpec", "ZOO", "load_model", "list_models"]
