"""ModelSpec: a model plus everything the pipeline needs to export and judge it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

Inputs = tuple  # a tuple of tensors, one per model input, batch dimension first


@dataclass
class GenerationSpec:
    """What a language model needs beyond its full-sequence form.

    ``config`` is the :class:`edge.models.llama.LlamaConfig` (its ``prefill_tokens`` P and
    ``context`` C fix the exported shapes); ``prompt`` (1, P) int64 token ids are the sample
    prompt pushed to devices; ``tokenizer`` says how text became ids (``{"kind": "bytes"}``,
    or a Hugging Face tokenizer path).
    """

    config: object
    prompt: torch.Tensor
    tokenizer: dict = field(default_factory=dict)

    def summary(self) -> dict:
        cfg = self.config
        return {"prefill_tokens": cfg.prefill_tokens, "context": cfg.context, "layers": cfg.layers,
                "heads": cfg.heads, "kv_heads": cfg.kv_heads, "head_dim": cfg.head_dim, "vocab": cfg.vocab,
                "kv_cache_bytes_fp32": cfg.kv_cache_bytes(4), "tokenizer": self.tokenizer.get("kind")}


@dataclass
class ModelSpec:
    """A model ready for the pipeline.

    ``example_inputs`` fixes the exported input shapes (batch 1). ``eval_inputs`` are
    held-out inputs for accuracy; ``calib_inputs`` are separate inputs for calibration,
    sensitivity analysis and distillation (never the evaluation ones).
    ``metric`` names a function in :mod:`edge.evaluate`: ``cosine`` (embedders),
    ``top1`` (classifiers) or ``perplexity`` (language models).
    """

    name: str
    model: torch.nn.Module
    example_inputs: Inputs
    input_names: list[str]
    output_names: list[str]
    eval_inputs: list[Inputs]
    calib_inputs: list[Inputs]
    metric: str
    description: str = ""
    source: str = "zoo"
    # Rebuilds a fresh fp32 copy (compression mutates modules in place).
    rebuild: Callable[[], torch.nn.Module] | None = field(default=None, repr=False)
    # Set for language models: exported with a KV cache (prefill + decode), see GenerationSpec.
    generation: GenerationSpec | None = None

    def fresh_model(self) -> torch.nn.Module:
        """A new eval-mode fp32 copy of the model, safe to compress in place."""
        if self.rebuild is not None:
            return self.rebuild().eval()
        import copy

        return copy.deepcopy(self.model).eval()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def summary(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "description": self.description,
            "params": self.num_params(),
            "inputs": [
                {"name": n, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
                for n, t in zip(self.input_names, self.example_inputs)
            ],
            "outputs": self.output_names,
            "metric": self.metric,
            "eval_samples": len(self.eval_inputs),
            "calib_samples": len(self.calib_inputs),
            **({"generation": self.generation.summary()} if self.generation is not None else {}),
        }
