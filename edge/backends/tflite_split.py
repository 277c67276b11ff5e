"""A language model's decode step converted in parts, for models onnx2tf cannot convert whole.

onnx2tf holds about fifty times a graph's weight bytes while it converts it
(benchmarks/tflite_convert_memory.py), so a 135M-parameter decoder needs about 34 GB in one
piece. Split, each part is a graph of its own:
the embedding, a run of layers with their share of the KV cache, the final norm and head
(:class:`edge.models.llama.ChunkModule`), each converted in its own onnx2tf process within
the memory the host has. The parts are then joined into **one** ``.tflite`` with a signature
per part (``chunk0``, ``chunk1``, ...), so the artifact stays one file: one hash, one push,
one load. The runner runs the signatures in order for each token, passing the hidden state
(1, dim) along and keeping each part's cache (``edge.runner.runner_generate``).

The manifest's ``generation.chunks`` lists the parts in order: signature, layers
[start, stop), whether it holds the embedding or the head, its input and output names and its
cache's shape in the artifact's layout. Identical weight buffers are stored once (a tied
head's matrix is the embedding's when onnx2tf keeps it as the table's layout).

``EDGE_TFLITE_SPLIT_LAYERS=N`` splits every language model into parts of at most N layers
(0 or unset: split only when the whole conversion would not fit the memory available).
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..artifact import Artifact
from ..errors import ConfigError, ExportError, UnsupportedError
from .base import StepSpec, generation_manifest

if TYPE_CHECKING:  # annotations only
    from ..models.base import ModelSpec

SPLIT_ENV = "EDGE_TFLITE_SPLIT_LAYERS"
MEMORY_SHARE = 0.85  # of the memory available when the export starts, what one conversion may plan to use
_SUBGRAPH_OPTIONS = ("WhileOptionsT", "IfOptionsT", "CallOnceOptionsT")  # ops that name other subgraphs


@dataclass(frozen=True)
class Chunk:
    """One part of the step: layers [start, stop), the embedding before them, the head after."""

    start: int
    stop: int
    embed: bool
    head: bool

    def describe(self) -> str:
        parts = (["embedding"] if self.embed else []) + ([f"layers {self.start}-{self.stop - 1}"]
                                                         if self.stop > self.start else []) + (["head"] if self.head else [])
        return " + ".join(parts)


def split_layers_setting() -> int:
    """``EDGE_TFLITE_SPLIT_LAYERS`` as an int (0: split by memory only)."""
    raw = os.environ.get(SPLIT_ENV, "").strip()
    if not raw:
        return 0
    if not raw.isdigit():
        raise ConfigError(f"expected {SPLIT_ENV} to be a whole number of layers per part (0: by memory), found {raw!r}")
    return int(raw)


def plan_chunks(embed_bytes: float, head_bytes: float, layer_bytes: list[float], budget_bytes: float,
                conversion_bytes, max_layers: int = 0) -> list[Chunk]:
    """Parts of a step, in order, each converting within ``budget_bytes``.

    ``conversion_bytes(table_bytes, layer_bytes)`` is onnx2tf's memory for a graph holding
    those weights (the embedding table and the head's matrix are "tables"). The units, in
    order (the embedding, each layer, the head), are packed greedily: a part takes the next
    unit while its conversion still fits and it has fewer than ``max_layers`` layers (0: no
    limit). One part only when the whole step fits and no limit is set.
    """
    units = [("embed", embed_bytes)] + [("layer", b) for b in layer_bytes] + [("head", head_bytes)]
    for kind, size in units:
        need = conversion_bytes(size, 0.0) if kind != "layer" else conversion_bytes(0.0, size)
        if need > budget_bytes:
            what = "the embedding table" if kind == "embed" else "the head" if kind == "head" else "one layer"
            raise UnsupportedError(
                f"tflite: converting {what} alone ({size / 1e6:.0f} MB of fp32 weights) through onnx2tf needs about "
                f"{need / 1e9:.1f} GB of memory, and {budget_bytes / 1e9:.1f} GB may be used here; export this model "
                "with executorch, torchscript or llamacpp, or convert it on a host with more memory")
    chunks, cur = [], None  # cur: [start, stop, embed, head, table bytes, layer bytes]
    layer = 0
    for kind, size in units:
        tables = size if kind != "layer" else 0.0
        layers = size if kind == "layer" else 0.0
        if cur is not None:
            full = kind == "layer" and max_layers and cur[1] - cur[0] >= max_layers
            if full or conversion_bytes(cur[4] + tables, cur[5] + layers) > budget_bytes:
                chunks.append(Chunk(cur[0], cur[1], cur[2], cur[3]))
                cur = None
        if cur is None:
            cur = [layer, layer, False, False, 0.0, 0.0]
        if kind == "embed":
            cur[2] = True
        elif kind == "head":
            cur[3] = True
        else:
            cur[1] = layer = layer + 1
        cur[4] += tables
        cur[5] += layers
    chunks.append(Chunk(cur[0], cur[1], cur[2], cur[3]))
    return chunks


def export_split(backend, step: torch.nn.Module, spec: ModelSpec, out_dir: Path, quant: str | None,
                 chunks: list[Chunk]) -> Artifact:
    """Convert each part of ``step`` (a StepModule) and join them into ``out_dir``'s model.tflite."""
    from ..models.llama import ChunkModule
    from .base import step_spec

    llama = step.llama
    whole = step_spec(spec, step, 1)
    manifest = backend.base_manifest(whole, step)
    entries, paths = [], []
    with tempfile.TemporaryDirectory(prefix="edge-tflite-parts-") as work_str:
        work = Path(work_str)
        for i, chunk in enumerate(chunks):
            module = ChunkModule(llama, chunk.start, chunk.stop, chunk.embed, chunk.head).eval()
            example = module.example_inputs()
            part_dir = work / f"chunk{i}"
            part_dir.mkdir()
            part = backend._convert(module, StepSpec(f"{spec.name}-chunk{i}", example, module.input_names,
                                                     module.output_names, [example]), part_dir, quant)
            entries.append(_entry(f"chunk{i}", chunk, part.manifest))
            paths.append(part.path)
        path = Path(out_dir) / manifest["file"]
        merge_tflite(paths, entries, path)
    manifest["inputs"], manifest["outputs"] = _whole_io(manifest, entries, llama.cfg.layers)
    layout = next(e["layout"] for e in manifest["inputs"] if e["name"] == "k_cache")
    manifest["generation"] = generation_manifest(spec, "token-by-token", "io", layout)
    manifest["generation"]["chunks"] = entries
    setting = split_layers_setting()
    why = f"{SPLIT_ENV}={setting}" if setting else "onnx2tf would not fit the memory available in one piece"
    manifest["notes"].append(f"converted in {len(chunks)} parts ({why}): "
                             + "; ".join(f"{e['signature']} {c.describe()}" for e, c in zip(entries, chunks)))
    return Artifact(path=path, manifest=manifest)


def load_parts(artifact: Artifact):
    """The whole step from the parts, with the runner's own generator: (tokens (1, 1), input_pos,
    k_cache, v_cache) in the manifest's layout -> (logits (1, V), k_cache_out, v_cache_out), the
    caches split and stacked on the layer axis."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from ..runner.runner_generate import PartsGenerator

    parts = artifact.manifest["generation"]["chunks"]
    gen = PartsGenerator(Interpreter(model_path=str(artifact.path)), parts)

    def run(arrays):
        tokens, pos, k, v = (np.asarray(a) for a in arrays)
        gen.caches = [(k[p["layers"][0]:p["layers"][1]], v[p["layers"][0]:p["layers"][1]]) if "cache_shape" in p
                      else None for p in parts]
        logits = gen.step(int(tokens.reshape(-1)[0]), int(pos.reshape(-1)[0]))
        caches = [c for c in gen.caches if c is not None]
        return [logits[None], np.concatenate([c[0] for c in caches]), np.concatenate([c[1] for c in caches])]

    return run


def _entry(key: str, chunk: Chunk, part: dict) -> dict:
    ins = {e["name"]: e for e in part["inputs"]}
    outs = {e["name"]: e for e in part["outputs"]}
    entry = {"signature": key, "layers": [chunk.start, chunk.stop], "embed": chunk.embed, "head": chunk.head,
             "inputs": [{"name": e["name"], "shape": e["shape"], "dtype": e["dtype"]} for e in part["inputs"]],
             "outputs": [e["name"] for e in part["outputs"]]}
    if "k_cache" in ins:
        for name in ("k_cache", "v_cache"):
            if (ins[name]["shape"], ins[name]["layout"]) != (outs[f"{name}_out"]["shape"], outs[f"{name}_out"]["layout"]):
                raise ExportError(f"tflite: part {key}'s {name} comes out as {outs[name + '_out']['shape']} "
                                  f"({outs[name + '_out']['layout']}), expected its input's {ins[name]['shape']} "
                                  f"({ins[name]['layout']}); the cache could not be passed back")
        entry["cache_shape"], entry["cache_layout"] = ins["k_cache"]["shape"], ins["k_cache"]["layout"]
    return entry


def _whole_io(manifest: dict, entries: list[dict], layers: int) -> tuple[list[dict], list[dict]]:
    """The step's inputs and outputs as the parts hold them together: the cache is the parts'
    caches stacked on the layer axis (first in either layout)."""
    layouts = {e["cache_layout"] for e in entries if "cache_layout" in e}
    if len(layouts) > 1:
        raise ExportError(f"tflite: the parts hold their caches in different layouts {sorted(layouts)}, expected one")
    shape = next(e["cache_shape"] for e in entries if "cache_shape" in e)
    layout = layouts.pop()
    first = {i["name"]: i for i in entries[0]["inputs"]}

    def fix(entry: dict) -> dict:
        if entry["name"].startswith(("k_cache", "v_cache")):
            return dict(entry, shape=[layers, *shape[1:]], layout=layout)
        if entry["name"] == "tokens":
            return dict(entry, dtype=first["tokens"]["dtype"])
        return entry
    return [fix(e) for e in manifest["inputs"]], [fix(e) for e in manifest["outputs"]]


def merge_tflite(paths: list[Path], entries: list[dict], out: Path) -> None:
    """Join single-subgraph .tflite files into one, a signature per file (``entries``: their
    ``signature`` keys, input names and output names in order); identical buffers stored once."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils as fu

    merged = schema.ModelT()
    merged.buffers, merged.operatorCodes, merged.subgraphs, merged.signatureDefs = [schema.BufferT()], [], [], []
    by_hash: dict[bytes, int] = {}
    codes: dict[tuple, int] = {}
    best_meta, best_version = None, ()
    for path, entry in zip(paths, entries):
        model = fu.read_model(str(path))
        merged.version = model.version
        if len(model.subgraphs) != 1:
            raise ExportError(f"tflite: expected one subgraph in part {entry['signature']}, found {len(model.subgraphs)}")
        buffers = [_add_buffer(merged, by_hash, b, schema) for b in model.buffers]
        ops = []
        for code in model.operatorCodes:
            key = (code.builtinCode, code.deprecatedBuiltinCode, code.customCode, code.version)
            if key not in codes:
                codes[key] = len(merged.operatorCodes)
                merged.operatorCodes.append(code)
            ops.append(codes[key])
        sg = model.subgraphs[0]
        for op in sg.operators:
            if type(op.builtinOptions).__name__ in _SUBGRAPH_OPTIONS:
                raise ExportError(f"tflite: part {entry['signature']} has control flow ({type(op.builtinOptions).__name__}); "
                                  "parts with subgraphs of their own cannot be joined")
            op.opcodeIndex = ops[op.opcodeIndex]
        for t in sg.tensors:
            t.buffer = buffers[t.buffer]
        sg.name = entry["signature"]
        merged.signatureDefs.append(_signature(schema, entry, sg, len(merged.subgraphs)))
        merged.subgraphs.append(sg)
        meta = {m.name.decode() if isinstance(m.name, bytes) else m.name: m for m in (model.metadata or [])}
        version = _runtime_version(model, meta.get("min_runtime_version"))
        if best_meta is None or version > best_version:
            best_meta, best_version = [(m, buffers[m.buffer]) for m in meta.values()], version
    merged.metadata = []
    for m, buf in best_meta or []:
        m.buffer = buf
        merged.metadata.append(m)
    merged.description = "edge: a decode step in parts, one signature per part"
    tmp = out.with_name(out.name + ".partial")
    try:
        fu.write_model(merged, str(tmp))
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


def _add_buffer(merged, by_hash: dict, buf, schema) -> int:
    if getattr(buf, "offset", 0) or getattr(buf, "size", 0):
        raise ExportError("tflite: a part keeps its weights outside the flatbuffer (over 2 GB); split it finer "
                          f"with {SPLIT_ENV}")
    data = buf.data
    if data is None or len(data) == 0:
        return 0
    raw = data.tobytes() if hasattr(data, "tobytes") else bytes(data)
    key = hashlib.sha256(raw).digest()
    if key not in by_hash:
        by_hash[key] = len(merged.buffers)
        merged.buffers.append(buf)
    return by_hash[key]


def _signature(schema, entry: dict, sg, index: int):
    names = [(t.name.decode() if isinstance(t.name, bytes) else t.name) for t in sg.tensors]
    by_name = {names[i]: i for i in sg.inputs}
    wanted = [i["name"] for i in entry["inputs"]]
    if set(wanted) - set(by_name):  # onnx2tf kept no names: inputs in the order the part declared them
        by_name = dict(zip(wanted, sg.inputs))
    if len(sg.outputs) != len(entry["outputs"]):
        raise ExportError(f"tflite: part {entry['signature']} has {len(sg.outputs)} outputs, expected {entry['outputs']}")
    sig = schema.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = entry["signature"], index
    sig.inputs = [_tensor_map(schema, name, by_name[name]) for name in wanted]
    sig.outputs = [_tensor_map(schema, name, i) for name, i in zip(entry["outputs"], sg.outputs)]
    return sig


def _tensor_map(schema, name: str, index: int):
    t = schema.TensorMapT()
    t.name, t.tensorIndex = name, int(index)
    return t


def _runtime_version(model, meta) -> tuple:
    if meta is None:
        return ()
    raw = bytes(model.buffers[meta.buffer].data).split(b"\0", 1)[0].decode(errors="replace")
    return tuple(int(x) for x in re.findall(r"\d+", raw))
