"""ExecuTorch (``.pte``) with the XNNPACK delegate.

torch.export -> to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()]) ->
to_executorch. Ops XNNPACK does not take run on portable kernels; the manifest's
``delegation`` counts both per operator. torchao-quantized models export through here.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..artifact import Artifact
from ..errors import ExportError, UnsupportedError
from .base import Backend, Run, first_line

log = logging.getLogger(__name__)

# graph bookkeeping nodes that are not kernels
_NOT_KERNELS = {"getitem"}


class ExecuTorchBackend(Backend):
    name = "executorch"
    suffix = ".pte"
    dists = ("torch", "executorch", "torchao")
    options_allowed: dict[str, tuple] = {"executorch_quant_fusion": (False, True)}

    def export(self, model: torch.nn.Module, spec: Any, out_dir: Path, options: dict) -> Artifact:
        options = self.check_options(options)
        manifest = self.base_manifest(spec, model)
        program = _capture(model.eval(), tuple(spec.example_inputs))
        edge = _lower(program)
        manifest["delegation"] = delegation_summary(edge.exported_program().graph_module)
        path = Path(out_dir) / manifest["file"]
        _emit(edge, path, options["executorch_quant_fusion"])
        if options["executorch_quant_fusion"]:
            manifest["notes"].append("emitted with quant fusion and constant propagation")
        return Artifact(path=path, manifest=manifest)

    def load(self, artifact: Artifact) -> Run:
        import executorch.kernels.quantized  # noqa: F401  kernels of quantized embeddings
        from executorch.runtime import Runtime

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
                f"control flow ({first_line(exc)}). Rewrite the branch with torch.where or torch.cond"
            ) from exc
        raise ExportError(
            f"executorch: torch.export failed on {type(model).__name__}: {first_line(exc)}"
        ) from exc


def _lower(program: torch.export.ExportedProgram):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    except Exception as exc:  # edge dialect verification and partitioner errors
        op = re.search(r"Operator (\S+) is not in Core ATen", str(exc))
        if op:
            raise UnsupportedError(
                f"executorch: operator {op.group(1).replace('torch._ops.', '')} has no Core ATen "
                "lowering, so ExecuTorch cannot run it; rewrite it with core ops or use another backend"
            ) from exc
        raise ExportError(
            f"executorch: lowering to the edge dialect / XNNPACK failed: {first_line(exc)}"
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
            f"executorch: to_executorch failed (an op with no ExecuTorch kernel?): {first_line(exc, 500)}"
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
