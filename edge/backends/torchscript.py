"""TorchScript for the PyTorch Mobile lite interpreter (``.ptl``).

trace (script when tracing froze data-dependent control flow) -> freeze ->
optimize_for_mobile when this torch build has XNNPACK -> ``_save_for_lite_interpreter``.
PyTorch Mobile is deprecated upstream; this backend is kept working (it is the path for
``torch.ao`` dynamic-quantized models) but new features go to ExecuTorch.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..artifact import Artifact
from ..errors import ExportError, UnsupportedError, first_line
from .base import Backend, CostTraits, Run, eager_outputs, generation_manifest, step_spec

if TYPE_CHECKING:  # annotations only
    from ..models.base import ModelSpec

log = logging.getLogger(__name__)

# how many calibration samples check that a trace did not freeze a data-dependent branch
_TRACE_CHECK_SAMPLES = 8


_NO_INT4 = "the TorchScript lite interpreter has no int4 kernels (torch.ao quantizes to int8 only)"


class TorchScriptBackend(Backend):
    name = "torchscript"
    suffix = ".ptl"
    dists = ("torch",)
    options_allowed: dict[str, tuple] = {}
    runtime_modules = (("torch", "torch"),)
    runner_loader = "torchscript"
    # the lite interpreter dispatches every op; its .ptl of a quantize_dynamic model measured
    # ~2 bytes per int8 weight (double scales, int64 zero points per channel)
    # overheads: measured on a 2-core x86_64 host by `edge profiles calibrate` (1 thread, 2026-12-01: per inference 3.5 us, per op 1.07 us)
    # and scaled to the reference Cortex-A72 by the cost model's own core speedup (fp32 per core, 11.6x)
    # memory, measured by the runner on the same host (torch 2.13 CPU wheel): the weights load once
    # (minilm fp32: +87 MB anonymous); a model's first inference pages in the kernels it calls (tiny-mlp
    # +6 MB, convs or transformer blocks 14-17 MB). The runtime alone measured 220 MB there, nearly all
    # of it `import torch` of the x86_64 wheel, so the 120 MB default is left for Arm devices to calibrate.
    traits = CostTraits(container_overhead_bytes=32 * 1024, weight_residency=1.0, runtime_memory_mb=120.0,
                        efficiency=0.2, overhead_ms=0.04, per_op_overhead_ms=0.012, int8_weight_bytes=2.0,
                        int8_row_bytes=16.0, load_memory_mb=6.0,
                        kv_reads_whole_cache=True)  # the traced step masks a static cache
    host_flavour = "torchscript"  # torch.ao's dynamic quantization loses more than torchao's
    host_quantizer = "torch.ao"
    unsupported_techniques = {
        "int8_static": ("eager-mode static quantization needs QuantStub/DeQuantStub and fused modules "
                        "in the model source; use executorch (PT2E) or tflite"),
        "int4_weight": _NO_INT4,
    }

    def unsupported_reason(self, config: Any) -> str | None:
        if config.type_tag == "embedding_quant" and config.bits == 4:
            return _NO_INT4
        return super().unsupported_reason(config)

    def lower(self, model: torch.nn.Module, config: Any, ctx: Any) -> torch.nn.Module:
        """torch.ao ``quantize_dynamic``: per-channel int8 Linear, float-qparams int8 embeddings."""
        from torch import nn
        from torch.ao.quantization import (float_qparams_weight_only_qconfig, per_channel_dynamic_qconfig,
                                           quantize_dynamic)

        from ..compress.groups import selects

        if config.type_tag == "int8_dynamic":
            names = {n: per_channel_dynamic_qconfig for n, m in model.named_modules()
                     if isinstance(m, nn.Linear) and selects(config.groups, n, m)}
            return quantize_dynamic(model, qconfig_spec=names, dtype=torch.qint8, inplace=False)
        if config.type_tag == "embedding_quant":
            return quantize_dynamic(model, qconfig_spec={nn.Embedding: float_qparams_weight_only_qconfig},
                                    dtype=torch.quint8, inplace=False)
        return super().lower(model, config, ctx)  # fp16: the same half-precision module as eager

    def export(self, model: torch.nn.Module, spec: ModelSpec, out_dir: Path, options: dict) -> Artifact:
        with warnings.catch_warnings():
            # every TorchScript entry point warns that it is deprecated; the module docstring says so
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            return self._export(model, spec, Path(out_dir), options)

    def _export(self, model: torch.nn.Module, spec: ModelSpec, out_dir: Path, options: dict) -> Artifact:
        self.check_options(options)
        if spec.generation is not None:
            return self._export_lm(model, spec, out_dir)
        manifest = self.base_manifest(spec, model)
        module, how = self._capture(model.eval(), spec)
        manifest["notes"].append(f"captured with torch.jit.{how}")
        try:
            module = torch.jit.freeze(module.eval())
        except RuntimeError as exc:
            raise ExportError(f"torchscript: torch.jit.freeze failed: {first_line(exc, with_type=True)}") from exc
        module = _try_optimize(module, manifest["notes"])
        path = out_dir / manifest["file"]
        try:
            module._save_for_lite_interpreter(str(path))
        except RuntimeError as exc:
            raise ExportError(
                f"torchscript: saving for the lite interpreter failed: {first_line(exc, with_type=True)}"
            ) from exc
        return Artifact(path=path, manifest=manifest)

    def _export_lm(self, model: torch.nn.Module, spec: ModelSpec, out_dir: Path) -> Artifact:
        """The cached step, traced at P tokens; the trace keeps T symbolic, so decode reuses it at T=1."""
        from ..models.llama import StepModule

        step = StepModule(model).eval()
        sspec = step_spec(spec, step, spec.generation.config.prefill_tokens)
        manifest = self.base_manifest(sspec, step)
        try:
            with torch.no_grad():
                module = torch.jit.trace(step, sspec.example_inputs, check_trace=False)
            module = torch.jit.freeze(module.eval())
        except Exception as exc:  # tracer / freeze failures of many types
            raise ExportError(f"torchscript: tracing the cached step failed: {first_line(exc, with_type=True)}") from exc
        manifest["generation"] = generation_manifest(spec, "batched", "io", "NCHW")
        manifest["notes"].append("cached step traced with torch.jit.trace (caches are inputs and outputs)")
        path = out_dir / manifest["file"]
        module._save_for_lite_interpreter(str(path))
        return Artifact(path=path, manifest=manifest)

    def load(self, artifact: Artifact) -> Run:
        from torch.jit.mobile import _load_for_lite_interpreter

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            module = _load_for_lite_interpreter(str(artifact.path))

        def run(arrays):
            with torch.no_grad():
                out = module(*(torch.from_numpy(np.asarray(a)) for a in arrays))
            outs = out if isinstance(out, (tuple, list)) else (out,)
            return [o.numpy() for o in outs]

        return run

    def _capture(self, model: torch.nn.Module, spec: ModelSpec) -> tuple[torch.jit.ScriptModule, str]:
        """Trace; if the trace froze a data-dependent branch, script instead."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", torch.jit.TracerWarning)
            try:
                traced = torch.jit.trace(model, spec.example_inputs, strict=False, check_trace=False)
            except Exception as exc:  # any tracer failure is an export failure of this model
                traced, trace_error = None, exc
            else:
                trace_error = None
        suspicious = [w for w in caught if "Python boolean" in str(w.message)]
        if traced is not None and (not suspicious or _agrees(traced, model, spec)):
            return traced, "trace"
        where = _where(suspicious) if suspicious else first_line(trace_error, with_type=True)
        log.info("torchscript: tracing is not faithful (%s); trying torch.jit.script", where)
        try:
            scripted = torch.jit.script(model)
        except Exception as exc:  # TorchScript frontend errors have no common base class
            raise UnsupportedError(
                f"torchscript: cannot capture {type(model).__name__}: tracing "
                + (f"froze data-dependent control flow at {where}" if suspicious else f"failed ({where})")
                + f", and torch.jit.script failed: {first_line(exc, with_type=True)}. Remove the data-dependent "
                "branch (e.g. torch.where) or use the executorch backend with torch.cond"
            ) from exc
        return scripted, "script"


def _agrees(traced: torch.jit.ScriptModule, model: torch.nn.Module, spec: ModelSpec) -> bool:
    """Does the trace match the eager model on a few calibration inputs?"""
    for inputs in list(spec.calib_inputs)[:_TRACE_CHECK_SAMPLES]:
        with torch.no_grad():
            want, got = eager_outputs(model, inputs), eager_outputs(traced, inputs)
        if any(not torch.allclose(w.float(), g.float(), rtol=1e-4, atol=1e-5) for w, g in zip(want, got)):
            return False
    return True


def _where(caught: list) -> str:
    w = caught[0]
    return f"{w.filename}:{w.lineno}"


def _try_optimize(module: torch.jit.ScriptModule, notes: list[str]) -> torch.jit.ScriptModule:
    from torch.utils.mobile_optimizer import optimize_for_mobile

    try:
        return optimize_for_mobile(module)
    except (RuntimeError, AssertionError) as exc:
        # the x86 CPU wheel fails with an internal assert whose useful part is its last sentence
        reason = str(exc).split("please report a bug to PyTorch.")[-1].strip().splitlines()[0][:200]
        notes.append(f"optimize_for_mobile unavailable in this torch build: {reason}")
        log.info("torchscript: optimize_for_mobile skipped (%s)", reason)
        return module
