"""ExecuTorch (``.pte``) with the XNNPACK delegate.

torch.export -> to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()]) ->
to_executorch. Ops XNNPACK does not take run on portable kernels; the manifest's
``delegation`` counts both per operator. torchao-quantized models export through here.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..artifact import Artifact
from ..errors import ExportError, UnsupportedError, first_line
from .base import Backend, CostTraits, Run, generation_manifest, native_stderr_quiet

if TYPE_CHECKING:  # annotations only
    from ..models.base import ModelSpec

log = logging.getLogger(__name__)

# graph bookkeeping nodes that are not kernels
_NOT_KERNELS = {"getitem"}


class ExecuTorchBackend(Backend):
    name = "executorch"
    suffix = ".pte"
    dists = ("torch", "executorch", "torchao")
    options_allowed: dict[str, tuple] = {"executorch_quant_fusion": (False, True)}
    runtime_modules = (("executorch", "executorch"),)
    runner_loader = "executorch"
    # overheads: measured on a 2-core x86_64 host by `edge profiles calibrate` (1 thread, 2026-12-01: per inference 6 us, per op 0.06-0.2 us)
    # and scaled to the reference Cortex-A72 by the cost model's own core speedup (fp32 per core, 11.6x)
    # memory, measured by the runner on the same host (executorch 1.5.1): one copy of the weights stays
    # resident: XNNPACK packs its weights and the runtime frees the delegate's serialized copy (minilm
    # fp32, 86 MB .pte: +41 MB anonymous for the packed linears, +47 MB of the mapped program for the
    # 45 MB embedding table the portable kernels read, a peak 4 MB above that); loading a model adds
    # 3 MB (tiny-mlp). The runtime alone measured 357 MB there (the Python runner imports torch and
    # executorch.runtime; executor_runner on a phone has neither), so the 40 MB default is left to calibrate.
    traits = CostTraits(container_overhead_bytes=64 * 1024, weight_residency=1.0, runtime_memory_mb=40.0,
                        efficiency=0.35, overhead_ms=0.07, per_op_overhead_ms=0.001,
                        fuses_epilogues=True, load_memory_mb=3.0,
                        prefill_head_last_only=True)  # the exported step's head reads x[:, -1]
    # lower(): torchao source transforms and PT2E's XNNPACKQuantizer (the base class's eager lowering)

    def export(self, model: torch.nn.Module, spec: ModelSpec, out_dir: Path, options: dict) -> Artifact:
        options = self.check_options(options)
        if spec.generation is not None:
            return self._export_lm(model, spec, Path(out_dir), options)
        manifest = self.base_manifest(spec, model)
        program = _capture(model.eval(), tuple(spec.example_inputs))
        edge = _lower(program)
        manifest["delegation"] = delegation_summary(edge.exported_program().graph_module)
        path = Path(out_dir) / manifest["file"]
        _emit(edge, path, options["executorch_quant_fusion"])
        if options["executorch_quant_fusion"]:
            manifest["notes"].append("emitted with quant fusion and constant propagation")
        return Artifact(path=path, manifest=manifest)

    native_tool = "executor_runner"

    def native_bench_argv(self, binary: str, artifact: str, warmup: int, iterations: int,
                          threads: int | None) -> list[str]:
        # executor_runner has no warm-up flag: the first `warmup` executions are dropped.
        argv = [binary, f"--model_path={artifact}", f"--num_executions={warmup + iterations}"]
        return argv + ([f"--cpu_threads={threads}"] if threads else [])

    def parse_native_output(self, text: str, warmup: int) -> dict:
        from ..bench_native import parse_executor_runner

        return parse_executor_runner(text, warmup)

    def _export_lm(self, model: torch.nn.Module, spec: ModelSpec, out_dir: Path, options: dict) -> Artifact:
        """``forward(tokens (1, T<=P), input_pos (1,)) -> logits (1, V)`` with the KV cache inside.

        The layout ExecuTorch's own LLM export uses (``export_llama -kv --use_sdpa_with_kv_cache``):
        mutable cache buffers (1, C, Hkv, D) per layer written by ``llama::update_cache``,
        attention by ``llama::custom_sdpa``, a dynamic token dimension, and the metadata
        methods its C++ runner (``TextLLMRunner``) reads.
        """
        _import_llm_ops()

        cfg = spec.generation.config
        wrapper = CachedLlama(model.eval()).eval()
        manifest = self.base_manifest(spec, model)
        manifest["inputs"] = [
            {"name": "tokens", "shape": [1, cfg.prefill_tokens], "dtype": "int64", "layout": "plain",
             "source_layout": "plain", "dynamic": {"dim": 1, "min": 1, "max": cfg.prefill_tokens}},
            {"name": "input_pos", "shape": [1], "dtype": "int64", "layout": "plain", "source_layout": "plain"}]
        manifest["outputs"] = [{"name": "logits", "shape": [1, cfg.vocab], "dtype": "float32", "layout": "plain",
                                "source_layout": "plain"}]
        example = (torch.tensor([[1, 2, 3]], dtype=torch.long), torch.tensor([0], dtype=torch.long))
        dynamic = ({1: torch.export.Dim("token_dim", max=cfg.prefill_tokens)}, {0: 1})
        try:
            with torch.no_grad():
                program = torch.export.export(wrapper, example, dynamic_shapes=dynamic, strict=False)
        except Exception as exc:  # torch.export raises many types
            raise ExportError(f"executorch: torch.export of the cached decoder failed: {first_line(exc, with_type=True)}") from exc
        edge = _lower(program, constant_methods=_llm_metadata(spec))
        manifest["delegation"] = delegation_summary(edge.exported_program().graph_module)
        path = out_dir / manifest["file"]
        _emit(edge, path, options["executorch_quant_fusion"])
        manifest["generation"] = generation_manifest(spec, "batched", "internal", "1, context, kv_heads, head_dim "
                                                     "per layer (llama::update_cache)")
        manifest["notes"].append("KV cache and SDPA with ExecuTorch's llama::update_cache / llama::custom_sdpa")
        return Artifact(path=path, manifest=manifest)

    def load(self, artifact: Artifact) -> Run:
        import executorch.kernels.quantized  # noqa: F401  kernels of quantized embeddings
        from executorch.runtime import Runtime

        with native_stderr_quiet():
            method = Runtime.get().load_program(str(artifact.path)).load_method("forward")

        def run(arrays):
            outs = method.execute([torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
            return [o.numpy() if isinstance(o, torch.Tensor) else np.asarray(o) for o in outs]

        return run


def _capture(model: torch.nn.Module, example: tuple) -> torch.export.ExportedProgram:
    try:
        with torch.no_grad():
            return torch.export.export(model, example)
    except Exception as exc:  # torch.export raises many types (UserError, GuardOnDataDependent...)
        text = str(exc)
        if "data-dependent" in text or "data dependent" in text or "GuardOnDataDependent" in type(exc).__name__:
            raise UnsupportedError(
                f"executorch: torch.export cannot capture {type(model).__name__}: data-dependent "
                f"control flow ({first_line(exc, with_type=True)}). Rewrite the branch with torch.where or torch.cond"
            ) from exc
        raise ExportError(
            f"executorch: torch.export failed on {type(model).__name__}: {first_line(exc, with_type=True)}"
        ) from exc


def _import_llm_ops() -> None:
    """Register ExecuTorch's llama::* ops (its loader logs at INFO on the root logger: keep that quiet)."""
    logging.disable(logging.INFO)
    try:
        import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
    finally:
        logging.disable(logging.NOTSET)


class CachedLlama(torch.nn.Module):
    """A :class:`edge.models.llama.Llama` with its KV cache as mutable buffers and ExecuTorch's LLM ops.

    RMSNorm's mean is written as a matrix product (a 1/sqrt(dim)-scaled sum of squares against a
    row of ones): XNNPACK runs it, where a mean over the last dim would run as a portable op
    between XNNPACK calls, splitting each layer into more delegate calls (a SmolLM2-shaped decoder
    of 4 layers at int4: 21 XNNPACK subgraphs -> 13; on this x86 host its decode step took the same
    time either way). RoPE's half rotation stays slices and a concatenation: written as a product
    with a signed permutation it ran in XNNPACK too, but the int4 decode step got about 25 % slower,
    ``llama::custom_sdpa`` taking several times as long in an ETDump profile
    (benchmarks/executorch_llm_graph.py compares the three). The arithmetic is the eager model's.
    """

    def __init__(self, llama: torch.nn.Module):
        super().__init__()
        self.llama = llama
        cfg = llama.cfg
        dtype = torch.float16 if llama.norm.weight.dtype == torch.float16 else torch.float32
        for i in range(cfg.layers):
            self.register_buffer(f"k_cache_{i}", torch.zeros(1, cfg.context, cfg.kv_heads, cfg.head_dim, dtype=dtype))
            self.register_buffer(f"v_cache_{i}", torch.zeros(1, cfg.context, cfg.kv_heads, cfg.head_dim, dtype=dtype))
        self.register_buffer("ones", torch.ones(1, cfg.dim, dtype=dtype), persistent=False)
        self.scale = cfg.dim ** -0.5
        self.cache_dtype = dtype

    def _norm(self, norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        scaled = x * self.scale
        return x * torch.rsqrt(torch.nn.functional.linear(scaled * scaled, self.ones) + norm.eps) * norm.weight

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def _positions(self, tokens: torch.Tensor, input_pos: torch.Tensor):
        """(T, start, cos, sin) of one call: T tokens from cache position ``input_pos[0]``, RoPE's
        cos and sin for those positions as (1, T, 1, head dim)."""
        from ..models.llama import rope

        cfg = self.llama.cfg
        t = tokens.shape[1]
        start = input_pos[0].item()
        torch._check_is_size(start)
        torch._check(start < cfg.context)
        cos, sin = rope(torch.arange(t) + start, cfg.head_dim, cfg.rope_base)
        return t, start, cos.to(self.cache_dtype)[None, :, None, :], sin.to(self.cache_dtype)[None, :, None, :]

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        m, cfg = self.llama, self.llama.cfg
        t, start, cos, sin = self._positions(tokens, input_pos)
        heads, kv_heads, head_dim = cfg.heads, cfg.kv_heads, cfg.head_dim
        x = m.embed_tokens(tokens)
        for i, layer in enumerate(m.layers):
            attn, h = layer.attn, self._norm(layer.attn_norm, x)
            q = self._rope(attn.q_proj(h).view(1, t, heads, head_dim), cos, sin)
            k = self._rope(attn.k_proj(h).view(1, t, kv_heads, head_dim), cos, sin)
            v = attn.v_proj(h).view(1, t, kv_heads, head_dim)
            k_cache, v_cache = getattr(self, f"k_cache_{i}"), getattr(self, f"v_cache_{i}")
            torch.ops.llama.update_cache(k, k_cache, start)
            torch.ops.llama.update_cache(v, v_cache, start)
            out = torch.ops.llama.custom_sdpa(q, k_cache, v_cache, start, None, 0, True)
            x = x + attn.o_proj(out.reshape(1, t, heads * head_dim))
            x = x + layer.ffn(self._norm(layer.ffn_norm, x))
        return m.lm_head(self._norm(m.norm, x[:, -1, :])).float()


def _llm_metadata(spec: ModelSpec) -> dict:
    """The constant methods ExecuTorch's LLM runner reads (as export_llama writes them)."""
    cfg = spec.generation.config
    tok = spec.generation.tokenizer
    return {"get_max_seq_len": cfg.prefill_tokens, "get_max_context_len": cfg.context, "get_n_layers": cfg.layers,
            "get_vocab_size": cfg.vocab, "use_kv_cache": True, "use_sdpa_with_kv_cache": True,
            "enable_dynamic_shape": True, "get_bos_id": int(tok.get("bos_id", 1)),
            "get_eos_ids": [int(t) for t in tok.get("eos_ids", [2])]}


def _lower(program: torch.export.ExportedProgram, constant_methods: dict | None = None):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                           constant_methods=constant_methods)
    except Exception as exc:  # edge dialect verification and partitioner errors
        op = re.search(r"Operator (\S+) is not in Core ATen", str(exc))
        if op:
            raise UnsupportedError(
                f"executorch: operator {op.group(1).replace('torch._ops.', '')} has no Core ATen "
                "lowering, so ExecuTorch cannot run it; rewrite it with core ops or use another backend"
            ) from exc
        raise ExportError(
            f"executorch: lowering to the edge dialect / XNNPACK failed: {first_line(exc, with_type=True)}"
        ) from exc


def _emit(edge: Any, path: Path, quant_fusion: bool) -> None:
    from executorch.exir import ExecutorchBackendConfig

    if quant_fusion:
        import executorch.kernels.quantized  # noqa: F401  registers quantized_decomposed out variants
    config = ExecutorchBackendConfig(do_quant_fusion_and_const_prop=quant_fusion)
    try:
        program = edge.to_executorch(config)
    except Exception as exc:  # e.g. "Missing out variants: {...}" for ops with no portable kernel
        raise ExportError(
            f"executorch: to_executorch failed (an op with no ExecuTorch kernel?): {first_line(exc, 500, with_type=True)}"
        ) from exc
    with open(path, "wb") as f:
        program.write_to_file(f)


def delegation_summary(graph_module: torch.fx.GraphModule) -> dict:
    """Per-operator counts of nodes delegated to XNNPACK vs left to portable kernels."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    by_op = {
        op: {"delegated": b.delegated, "portable": b.non_delegated}
        for op, b in sorted(info.delegation_by_operator.items()) if op not in _NOT_KERNELS
    }
    delegated = sum(v["delegated"] for v in by_op.values())
    portable = sum(v["portable"] for v in by_op.values())
    return {
        "delegate": "XnnpackBackend",
        "delegated_subgraphs": info.num_delegated_subgraphs,
        "delegated_nodes": delegated,
        "portable_nodes": portable,
        "coverage": round(delegated / max(delegated + portable, 1), 4),
        "by_operator": by_op,
        "portable_ops": sorted(op for op, v in by_op.items() if v["portable"]),
    }
