"""The backend contract and the layout/dtype helpers every backend shares.

A backend has a ``name`` (the registry key), a ``suffix`` (the file extension) and:

- ``export(model, spec, out_dir, options) -> Artifact``: convert the (possibly already
  compressed) eager model to ``out_dir/model<suffix>`` using ``spec.example_inputs`` for
  the fixed input shapes; the returned manifest holds at least ``backend``, ``file``,
  ``inputs``, ``outputs``, ``delegation``, ``tool_versions`` and ``notes``. The exporter
  (:mod:`edge.exporter`) adds hashes, validation and the cache key.
- ``unsupported(plan) -> list[str]``: why this backend cannot express a plan's techniques
  (empty when it can, and for ``plan=None``).
- ``load(artifact) -> run``: the host runtime for the file; ``run(arrays)`` takes inputs in
  the artifact's own layout/dtype, in manifest order, and returns its raw outputs (numpy
  arrays, manifest order).

Options a backend reads are declared in ``options_allowed``; unknown keys or values are
configuration errors. Layout names: ``NCHW``/``NHWC`` (4-D), ``NCW``/``NWC`` (3-D),
``NCDHW``/``NDHWC`` (5-D), ``plain`` for tensors with no channel dimension.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from ..artifact import Artifact
from ..errors import ConfigError, UnsupportedError

if TYPE_CHECKING:  # annotations only
    from ..models.base import ModelSpec

CHANNELS_FIRST = {3: "NCW", 4: "NCHW", 5: "NCDHW"}
CHANNELS_LAST = {3: "NWC", 4: "NHWC", 5: "NDHWC"}
PLAIN = "plain"

Run = Callable[[Sequence[np.ndarray]], list]


@dataclass(frozen=True)
class CostTraits:
    """What the planner's cost model assumes about a runtime until a calibration measures it.

    ``container_overhead_bytes``: file bytes beyond the weights; ``weight_residency``: copies of
    the weights resident while running (e.g. the loaded program plus XNNPACK's packed copy);
    ``runtime_memory_mb``: RSS of the runner with the runtime imported, before a model loads;
    ``efficiency``: share of the profile's peak matmul throughput its kernels reach;
    ``overhead_ms``: fixed cost per inference; ``per_op_overhead_ms``: dispatch per graph op;
    ``int8_weight_bytes`` / ``int8_row_bytes``: bytes per int8 weight and per output row where
    the format stores more than one byte and a scale pair (None: 1 byte + 8 bytes per row);
    ``kv_context_multiple``: the multiple of positions the runtime rounds a KV cache's context
    up to (the cache's element type is a plan option: ``Backend.kv_cache_dtypes``);
    ``embedding_residency``: copies of an embedding table resident (None: ``weight_residency``);
    ``load_memory_mb``: RSS that loading and running any model adds beyond its weights and
    activations (runtime code and data first touched then, the interpreter's own structures);
    ``kv_reads_whole_cache``: a decode step attends over every allocated cache position (masked
    static-cache attention) rather than only the positions filled so far;
    ``activation_residency``: share of the counted peak activations (a full forward's) the
    runtime keeps resident; ``prefill_head_last_only``: a language model's prefill runs the output
    head on the last prompt position only (not on every one); ``prefill_token_by_token``: it feeds
    the prompt through the decode step one token at a time (TTFT is the prompt's decode steps); ``repacked_precisions``: precisions whose weights the runtime copies
    into a repacked layout at load (two resident copies) on CPUs with any of ``repack_isa``.
    """

    container_overhead_bytes: int
    weight_residency: float
    runtime_memory_mb: float
    efficiency: float
    overhead_ms: float
    per_op_overhead_ms: float
    int8_weight_bytes: float | None = None
    int8_row_bytes: float | None = None
    # the multiple of positions the runtime rounds a KV cache's context up to
    kv_context_multiple: int = 1
    # a weight tied between two layer groups (an LM head and its embedding) is stored once
    tied_weights_stored_once: bool = False
    # BatchNorm, ReLU/clamp and bias adds on a conv's or matmul's output are folded into that
    # kernel (XNNPACK, TFLite), so they cost nothing of their own
    fuses_epilogues: bool = False
    # a runtime that looks rows up in a mapped file in place holds only the rows it touched
    embedding_residency: float | None = None
    load_memory_mb: float = 0.0
    kv_reads_whole_cache: bool = False
    activation_residency: float = 1.0
    prefill_head_last_only: bool = False
    prefill_token_by_token: bool = False
    repacked_precisions: tuple[str, ...] = ()
    repack_isa: tuple[str, ...] = ()


class Backend(ABC):
    """One export format and its host runtime: everything edge knows about that runtime.

    Besides export and load, a backend declares the runtime modules a device needs (any one of
    ``runtime_modules``, as ``(module, distribution)``: the first is what ``edge targets setup``
    installs, a target's ``runtime_dists`` may name another), the runner's loader for it
    (``runner_loader``, a key of the runner's ``LOADERS``), its cost-model ``traits``, whether
    quantization can only apply to the whole model at conversion (``whole_model_quantization``),
    which host flavour stands in for its numerics during sensitivity analysis
    (``host_flavour``: ``"eager"`` = the torchao model, or the backend's own name), which
    techniques it cannot express (``unsupported_techniques``: type tag -> reason) and how it
    lowers the ones it can (:meth:`lower`).
    """

    name: str = ""
    suffix: str = ""
    # distribution names whose versions go into the manifest and the cache key
    dists: tuple[str, ...] = ("torch",)
    # option key -> allowed values
    options_allowed: dict[str, tuple] = {}
    runtime_modules: tuple[tuple[str, str], ...] = ()

    @property
    def runtime_dists(self) -> list[str]:
        """The distributions that can provide the runtime, the default (what setup installs) first."""
        return [dist for _module, dist in self.runtime_modules]
    runner_loader: str = ""
    traits: CostTraits
    whole_model_quantization: bool = False
    # a weight technique naming no layer groups quantizes the embedding table too (one file type)
    ungrouped_quant_covers_embedding: bool = False
    # the precision a whole-model int4 file type keeps the output (head) tensor at, None: int4 too
    ungrouped_int4_head: str | None = None
    # the cost model's precision of a whole-model int4 file type, None: int4 g<group size>
    ungrouped_int4_precision: str | None = None
    # `edge profiles calibrate --llm`: the decoder probes reach their size by layers (at the
    # model's own head size) rather than by a wide head; for runtimes whose per-layer work differs
    # from one wide matrix's and whose export is cheap (ExecuTorch lowers every linear: minutes)
    calibration_decoder_depth: bool = False
    # `--llm`: a second int8 probe with the same bytes through more layers gives the per-layer cost
    # (decode_layer_ms); off where a deep probe's export is slow
    calibration_layer_probe: bool = True
    host_flavour: str = "eager"
    host_quantizer: str = "torchao"  # the library behind host_flavour, for the plan's accuracy basis
    unsupported_techniques: dict[str, str] = {}
    # `edge profiles calibrate` probes this backend skips when another backend is calibrated too
    calibration_skipped_probes: tuple[str, ...] = ()
    # the target field naming the runtime's own benchmark binary (devices without Python)
    native_tool: str | None = None
    # runner modules (files in edge/runner/) this backend's runner loader imports; pushed beside runner.py
    runner_files: tuple[str, ...] = ()
    # the backend converts language models only (export of any other model raises UnsupportedError)
    language_models_only: bool = False
    # the KV cache element types a language-model artifact can hold (KvCacheConfig); the first is
    # what it holds when the plan names none
    kv_cache_dtypes: tuple[str, ...] = ("fp32",)

    @abstractmethod
    def export(self, model: torch.nn.Module, spec: ModelSpec, out_dir: Path, options: dict) -> Artifact:
        """Convert ``model`` into ``out_dir/model<suffix>`` and return the artifact."""

    @abstractmethod
    def load(self, artifact: Artifact) -> Run:
        """Load the artifact's file in the host runtime; the callable runs one inference."""

    def unsupported(self, plan: Any) -> list[str]:
        """Reasons this backend cannot express ``plan``'s techniques ([] when it can)."""
        if plan is None:
            return []
        from ..compress.capabilities import unsupported_in_recipe

        return unsupported_in_recipe(plan, self.name)

    def unsupported_reason(self, config: Any) -> str | None:
        """Why this backend cannot express one technique config, or None when it can."""
        reason = self.unsupported_techniques.get(config.type_tag)
        if reason:
            return reason
        if config.type_tag == "kv_cache" and config.dtype not in self.kv_cache_dtypes:
            return f"{self.name} artifacts hold the KV cache as {' or '.join(self.kv_cache_dtypes)} only"
        if self.whole_model_quantization and getattr(config, "groups", ()):
            return (f"{self.name} quantizes every layer during conversion; per-group choices "
                    f"({','.join(config.groups)}) cannot be expressed")
        return None

    def kv_cache_problem(self, dtype: str, cfg: Any) -> str | None:
        """Why this model's KV cache (``cfg``: its LlamaConfig) cannot be ``dtype`` here, or None."""
        return None

    def native_bench_argv(self, binary: str, artifact: str, warmup: int, iterations: int,
                          threads: int | None) -> list[str]:
        """Device argv running the runtime's own benchmark binary on ``artifact``."""
        raise ConfigError(f"{self.name} has no native benchmark tool; run the Python runner instead")

    def parse_native_output(self, text: str, warmup: int) -> dict:
        """The native tool's output as the runner's result dict."""
        raise ConfigError(f"{self.name} has no native benchmark tool")

    def option_precision(self, options: dict) -> str | None:
        """The precision (``fp16``, ``int8``) this backend's export options imply, if any."""
        return None

    def record_conversion_option(self, ctx: Any, key: str, value: str) -> None:
        """For runtimes that quantize while converting: keep ``value`` as the export option ``key``
        (the eager model stays fp32); a plan asking for two different ones cannot be expressed."""
        previous = ctx.options.get(key)
        if previous not in (None, value):
            raise UnsupportedError(
                f"{self.name} quantizes the whole model once during conversion; the plan asks for both "
                f"{previous!r} and {value!r}. Keep one quantization step for {self.name}.")
        ctx.options[key] = value

    def lower(self, model: torch.nn.Module, config: Any, ctx: Any) -> torch.nn.Module:
        """Apply a quantization technique the way this runtime executes it (default: torchao eager)."""
        from .lowering import lower_eager

        return lower_eager(model, config, ctx)

    def load_generator(self, artifact: Artifact, threads: int | None = None) -> Any:
        """A language-model artifact's generator (prefill/decode/reset), the same class the runner uses."""
        from ..runner.runner_generate import GENERATORS

        with native_stderr_quiet():
            return GENERATORS[self.runner_loader](str(artifact.path), artifact.manifest, threads)

    def tool_versions(self) -> dict[str, str]:
        """Installed versions of this backend's toolchain (read from package metadata)."""
        out = {}
        for dist in self.dists:
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out[dist] = "missing"
        return out

    def check_options(self, options: dict | None) -> dict:
        """Options with defaults filled in; unknown keys or values raise ConfigError."""
        options = dict(options or {})
        for key, value in options.items():
            if key not in self.options_allowed:
                raise ConfigError(
                    f"{self.name}: unknown export option {key!r} (value {value!r}); "
                    f"expected one of {sorted(self.options_allowed)}"
                )
            if value not in self.options_allowed[key]:
                raise ConfigError(
                    f"{self.name}: expected option {key} in {list(self.options_allowed[key])}, "
                    f"found {value!r}"
                )
        return {key: options.get(key, allowed[0]) for key, allowed in self.options_allowed.items()}

    def base_manifest(self, spec: ModelSpec, model: torch.nn.Module) -> dict:
        """Manifest fields every backend fills the same way (artifact layout = eager layout)."""
        return {
            "backend": self.name,
            "file": "model" + self.suffix,
            "inputs": tensor_entries(spec.input_names, spec.example_inputs),
            "outputs": tensor_entries(spec.output_names, eager_outputs(model, spec.example_inputs)),
            "delegation": None,
            "tool_versions": self.tool_versions(),
            "notes": [],
        }


@dataclass
class StepSpec:
    """The cached step of a language model as the export helpers see a model: fixed example inputs."""

    name: str
    example_inputs: tuple
    input_names: list
    output_names: list
    calib_inputs: list


def step_spec(spec: ModelSpec, step_module: torch.nn.Module, tokens: int) -> StepSpec:
    """A StepSpec for ``step_module`` (``edge.models.llama.StepModule``) at ``tokens`` tokens per call."""
    from ..models.llama import STEP_INPUTS, STEP_OUTPUTS

    example = step_module.example_inputs(tokens)
    return StepSpec(spec.name, example, list(STEP_INPUTS), list(STEP_OUTPUTS), [example])


def generation_manifest(spec: ModelSpec, prefill_mode: str, cache: str, kv_layout: str,
                        cache_dtype: str = "float32") -> dict:
    """The manifest's ``generation`` block: P, C, the KV cache (shape, dtype, bytes), how prefill runs."""
    cfg = spec.generation.config
    per_elem = np.dtype(cache_dtype).itemsize
    return {
        "prefill_tokens": cfg.prefill_tokens, "context": cfg.context, "vocab": cfg.vocab,
        "prefill_mode": prefill_mode, "cache": cache,
        "kv_cache": {"shape": [2, *cfg.cache_shape()], "dims": "kv, layers, kv_heads, context, head_dim",
                     "dtype": cache_dtype, "bytes": cfg.kv_cache_bytes(per_elem), "layout": kv_layout},
        "config": cfg.to_dict(), "tokenizer": dict(spec.generation.tokenizer),
    }


@contextlib.contextmanager
def native_stderr_quiet():
    """Silence what native runtime code writes straight to file descriptor 2 (e.g. ExecuTorch's
    cpuinfo probing on virtual machines), unless edge logs at DEBUG level."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def default_layout(ndim: int) -> str:
    return CHANNELS_FIRST.get(ndim, PLAIN)


def tensor_entries(names: Sequence[str], tensors: Sequence[torch.Tensor]) -> list[dict]:
    """Manifest entries for tensors in the eager model's own layout."""
    out = []
    for i, t in enumerate(tensors):
        name = names[i] if i < len(names) else f"output_{i}"
        layout = default_layout(t.dim())
        out.append({"name": name, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
                    "layout": layout, "source_layout": layout})
    return out


@torch.no_grad()
def eager_outputs(model: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The model's outputs as a flat list of tensors."""
    out = model(*inputs)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def layout_perm(source: str, target: str) -> list[int] | None:
    """Axis permutation taking ``source`` layout to ``target`` (None when nothing moves)."""
    if source == target or PLAIN in (source, target):
        return None
    return [source.index(axis) for axis in target]


def to_artifact_inputs(arrays: Sequence[np.ndarray], entries: Sequence[dict]) -> list[np.ndarray]:
    """Eager-layout inputs -> the artifact's layout, dtype and (int8) quantization."""
    out = []
    for a, e in zip(arrays, entries):
        a = np.asarray(a)
        perm = layout_perm(e.get("source_layout", e["layout"]), e["layout"])
        if perm:
            a = a.transpose(perm)
        q = e.get("quantization")
        if q:
            info = np.iinfo(np.dtype(e["dtype"]))
            a = np.clip(np.round(a / q["scale"] + q["zero_point"]), info.min, info.max)
        out.append(np.ascontiguousarray(a.astype(np.dtype(e["dtype"]))))
    return out


def from_artifact_outputs(arrays: Sequence[np.ndarray], entries: Sequence[dict]) -> list[np.ndarray]:
    """The artifact's raw outputs -> float arrays in the eager model's layout."""
    out = []
    for a, e in zip(arrays, entries):
        a = np.asarray(a)
        q = e.get("quantization")
        if q:
            a = (a.astype(np.float32) - q["zero_point"]) * q["scale"]
        perm = layout_perm(e["layout"], e.get("source_layout", e["layout"]))
        if perm:
            a = a.transpose(perm)
        out.append(a)
    return out
