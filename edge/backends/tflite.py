"""TensorFlow Lite (``.tflite``) through ONNX and onnx2tf.

torch.onnx.export(dynamo=True) -> onnx2tf (in a subprocess with its own working
directory, no network) -> ``.tflite``. onnx2tf makes 3-D/4-D/5-D inputs channels-last
(NCHW -> NHWC); the manifest records each input's and output's layout. One conversion
writes every quantized variant; ``tflite_quantization`` picks the file:

=================  ================================  =============================
option             onnx2tf file                      inputs/outputs
=================  ================================  =============================
None               ``*_float32.tflite``              float32
``float16``        ``*_float16.tflite``              float32 (fp16 weights)
``dynamic_range``  ``*_dynamic_range_quant.tflite``  float32 (int8 weights)
``integer``        ``*_integer_quant.tflite``        float32 (int8 inside)
``full_integer``   ``*_full_integer_quant.tflite``   int8
=================  ================================  =============================

A language model's decode step that onnx2tf could not convert in the host's memory is
converted in parts and joined into one multi-signature file (:mod:`.tflite_split`).

Integer variants are calibrated with ``spec.calib_inputs``. onnx2tf downloads a sample
image file when every input is a 3-channel image; the backend writes that file into the
conversion's working directory from the spec's own calibration images instead.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..artifact import Artifact
from ..errors import ExportError, UnsupportedError, first_line
from .base import (CHANNELS_LAST, PLAIN, Backend, CostTraits, Run, default_layout, generation_manifest, layout_perm,
                   step_spec)

if TYPE_CHECKING:  # annotations only
    from ..models.base import ModelSpec

log = logging.getLogger(__name__)

CALIBRATION_IMAGE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
CALIBRATION_IMAGE_SHAPE = (20, 128, 128, 3)  # what onnx2tf's download_test_image_data() returns
VARIANTS = {None: "float32", "float16": "float16", "dynamic_range": "dynamic_range_quant",
            "integer": "integer_quant", "full_integer": "full_integer_quant"}
CONVERT_TIMEOUT_S = float(os.environ.get("EDGE_ONNX2TF_TIMEOUT_S", "1800"))
_DEAD_PROXY = "http://127.0.0.1:9"  # a closed port: any download attempt fails at once
_WORKER = "import json, sys, onnx2tf; onnx2tf.convert(**json.load(open(sys.argv[1])))"


# technique type tag -> onnx2tf variant; onnx2tf quantizes during conversion, the eager model stays fp32
_QUANT_VARIANT = {"int8_dynamic": "dynamic_range", "int8_static": "integer", "fp16": "float16"}


class TFLiteBackend(Backend):
    name = "tflite"
    suffix = ".tflite"
    dists = ("torch", "onnx", "onnxscript", "onnx2tf", "tensorflow-cpu", "tf-keras", "ai-edge-litert")
    options_allowed: dict[str, tuple] = {"tflite_quantization": tuple(VARIANTS)}
    runtime_modules = (("ai_edge_litert", "ai-edge-litert"), ("tflite_runtime", "tflite-runtime"),
                       ("tensorflow", "tensorflow"))
    runner_loader = "tflite"
    # overheads: measured on a 2-core x86_64 host by `edge profiles calibrate` (1 thread, 2026-12-01: per inference 0.4 us, per op 0.02 us)
    # and scaled to the reference Cortex-A72 by the cost model's own core speedup (fp32 per core, 11.6x)
    # memory, measured by the runner on the same host (ai-edge-litert 2.3.0): the runtime alone 39.5 MB
    # (Python 11 MB, numpy 15 MB, the interpreter); XNNPACK's packed copy of the weights plus the pages of
    # the mapped flatbuffer it read them from (minilm fp32: +42 MB anonymous, +47 MB file-backed for 43 MB
    # of linears); an embedding table is gathered from the mapped file in place, only the rows looked up
    # resident (minilm's 45 MB table: none to speak of); loading a model adds 3.4 MB (tiny-mlp)
    traits = CostTraits(container_overhead_bytes=32 * 1024, weight_residency=2.0, runtime_memory_mb=40.0,
                        efficiency=0.35, overhead_ms=0.005, per_op_overhead_ms=0.0003,
                        fuses_epilogues=True, embedding_residency=0.0, load_memory_mb=3.4,
                        kv_reads_whole_cache=True,  # the converted step masks a static cache
                        prefill_token_by_token=True)  # the artifact holds the decode step only
    whole_model_quantization = True
    # beside another backend, calibration skips these: device properties measured there (a 64 MiB
    # conversion takes minutes with onnx2tf), or optional probes; each other conversion costs ~15 s once.
    # The decoder probes of `--llm` (64 MB of weights each) would take onnx2tf several GB and minutes.
    calibration_skipped_probes = ("bandwidth", "matmul_fp32_deep", "elementwise", "elementwise_small",
                                  "decode_fp32", "decode_int8", "decode_int4")
    calibration_layer_probe = False  # 16 layers: onnx2tf would take ~12 GB and many minutes
    unsupported_techniques = {
        "int4_weight": "onnx2tf/TFLite conversion offers no int4 weight quantization",
        "embedding_quant": ("onnx2tf quantizes the whole model at once; use int8_dynamic (dynamic range), which "
                            "also covers the embedding tables"),
    }

    native_tool = "benchmark_model"

    def native_bench_argv(self, binary: str, artifact: str, warmup: int, iterations: int,
                          threads: int | None) -> list[str]:
        argv = [binary, f"--graph={artifact}", f"--num_runs={iterations}",
                f"--warmup_runs={warmup}", "--min_secs=0", "--warmup_min_secs=0"]
        return argv + ([f"--num_threads={threads}"] if threads else [])

    def parse_native_output(self, text: str, warmup: int) -> dict:
        from ..bench_native import parse_benchmark_model

        return parse_benchmark_model(text)

    def option_precision(self, options: dict) -> str | None:
        quant = options.get("tflite_quantization")
        return None if quant is None else "fp16" if quant == "float16" else "int8"

    def lower(self, model: torch.nn.Module, config: Any, ctx: Any) -> torch.nn.Module:
        """onnx2tf quantizes at conversion: record the variant to keep, leave the eager model alone."""
        value = _QUANT_VARIANT.get(config.type_tag)
        if value is None:
            return super().lower(model, config, ctx)
        self.record_conversion_option(ctx, "tflite_quantization", value)
        return model

    def export(self, model: torch.nn.Module, spec: ModelSpec, out_dir: Path, options: dict) -> Artifact:
        options = self.check_options(options)
        quant = options["tflite_quantization"]
        if spec.generation is not None:
            return self._export_lm(model, spec, Path(out_dir), quant)
        return self._convert(model, spec, Path(out_dir), quant)

    def _export_lm(self, model: torch.nn.Module, spec: ModelSpec, out_dir: Path, quant: str | None) -> Artifact:
        """The decode step (one token, caches in and out); prefill runs it token by token.

        onnx2tf writes one graph per conversion, and a second (prefill) graph would carry a
        second copy of the weights, so the artifact holds the decode step only.
        """
        from ..models.llama import StepModule

        if quant in ("integer", "full_integer"):
            raise UnsupportedError(f"tflite: {quant} quantization needs calibration of the KV-cache inputs; "
                                   "use dynamic_range (int8 weights) or float16 for language models")
        step = StepModule(model).eval()
        parts = _plan_parts(model)
        if len(parts) > 1:
            from .tflite_split import export_split

            artifact = export_split(self, step, spec, out_dir, quant, parts)
            artifact.manifest["notes"].append("decode step only: prefill feeds the prompt one token at a time")
            return artifact
        artifact = self._convert(step, step_spec(spec, step, 1), out_dir, quant)
        layout = next(e["layout"] for e in artifact.manifest["inputs"] if e["name"] == "k_cache")
        artifact.manifest["generation"] = generation_manifest(spec, "token-by-token", "io", layout)
        artifact.manifest["notes"].append("decode step only: prefill feeds the prompt one token at a time")
        return artifact

    def _convert(self, model: torch.nn.Module, spec: ModelSpec, out_dir: Path, quant: str | None) -> Artifact:
        manifest = self.base_manifest(spec, model)
        path = Path(out_dir) / manifest["file"]
        with tempfile.TemporaryDirectory(prefix="edge-onnx2tf-") as work_str:
            work = Path(work_str)
            _to_onnx(model.eval(), spec, work / "model.onnx")
            _write_calibration(spec, work, quant)
            _run_onnx2tf(self._convert_args(spec, work, quant), work)
            produced = work / "out" / f"model_{VARIANTS[quant]}.tflite"
            if not produced.exists():
                found = sorted(p.name for p in (work / "out").glob("*.tflite"))
                raise ExportError(f"tflite: onnx2tf wrote {found}, expected {produced.name}")
            produced.replace(path)
        _describe_io(path, manifest)
        manifest["notes"].append("converted with torch.onnx.export(dynamo=True) and onnx2tf")
        if quant:
            manifest["notes"].append(f"onnx2tf variant {VARIANTS[quant]}")
        return Artifact(path=path, manifest=manifest)

    def load(self, artifact: Artifact) -> Run:
        if (artifact.manifest.get("generation") or {}).get("chunks"):
            from .tflite_split import load_parts

            return load_parts(artifact)
        interpreter, ins, outs = _interpreter(artifact.path)
        # the interpreter's tensor order is its own: follow the manifest's (the eager model's) order
        ins = _ordered(ins, artifact.manifest["inputs"])
        outs = _ordered(outs, artifact.manifest["outputs"])

        def run(arrays):
            for d, a in zip(ins, arrays):
                interpreter.set_tensor(d["index"], np.asarray(a, dtype=d["dtype"]))
            interpreter.invoke()
            return [interpreter.get_tensor(d["index"]).copy() for d in outs]

        return run

    @staticmethod
    def _convert_args(spec: ModelSpec, work: Path, quant: str | None) -> dict:
        args = {
            "input_onnx_file_path": str(work / "model.onnx"),
            "output_folder_path": str(work / "out"),
            "copy_onnx_input_output_names_to_tflite": True,
            "non_verbose": True,
        }
        if quant == "dynamic_range":
            args["output_dynamic_range_quantized_tflite"] = True
        if quant in ("integer", "full_integer"):
            args["output_integer_quantized_tflite"] = True
            args["custom_input_op_name_np_data_path"] = [
                [name, str(work / f"calib_{i}.npy"), 0.0, 1.0] for i, name in enumerate(spec.input_names)
            ]
        return args


# onnx2tf's memory for a graph grows with its weights: about 48x the bytes of a large table (the
# embedding's gather, a head's matmul: a tied table, converted as both, 95x) and 53x a decoder
# layer's; fitted by benchmarks/tflite_convert_memory.py on SmolLM2-135M-shaped decoders of 1 and 3
# layers and a tiny one (2026-12-07, onnx2tf 1.28.8: a tiny decoder 0.72 GB, 12.3 GB for one layer, 13.8 GB
# for three); SmolLM2-135M in one piece would need about 34 GB. A step that does not fit is converted in
# parts (edge.backends.tflite_split).
CONVERT_BASE_BYTES = 0.72e9
CONVERT_BYTES_PER_TABLE_BYTE = 48.0
CONVERT_BYTES_PER_LAYER_BYTE = 53.0


def conversion_bytes(table_bytes: float, other_bytes: float) -> float:
    """Memory onnx2tf needs to convert a graph holding these fp32 weight bytes (see above); a tied
    embedding and head count twice in ``table_bytes`` (a gather and a matmul, each converted)."""
    return CONVERT_BASE_BYTES + CONVERT_BYTES_PER_TABLE_BYTE * table_bytes + CONVERT_BYTES_PER_LAYER_BYTE * other_bytes


def _plan_parts(model: torch.nn.Module) -> list:
    """The parts to convert a decoder's step in: one unless onnx2tf would not fit the memory
    available (or ``EDGE_TFLITE_SPLIT_LAYERS`` asks for parts)."""
    import psutil

    from .tflite_split import MEMORY_SHARE, plan_chunks, split_layers_setting

    def fp32_bytes(module: torch.nn.Module) -> float:
        return float(sum(p.numel() * 4 for p in module.parameters()))

    embed = float(model.embed_tokens.weight.numel() * 4)
    head = fp32_bytes(model.lm_head) + fp32_bytes(model.norm)
    layers = [fp32_bytes(layer) for layer in model.layers]
    budget = psutil.virtual_memory().available * MEMORY_SHARE
    return plan_chunks(embed, head, layers, budget, conversion_bytes, split_layers_setting())


def _to_onnx(model: torch.nn.Module, spec: ModelSpec, path: Path) -> None:
    chatty = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [lg.level for lg in chatty]
    for lg in chatty:  # graph-pass progress and constant-folding chatter are noise to an edge user
        lg.setLevel(max(lg.getEffectiveLevel(), logging.ERROR))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, tuple(spec.example_inputs), str(path), input_names=list(spec.input_names),
                              output_names=list(spec.output_names), dynamo=True, verbose=False)
    except Exception as exc:  # torch.export / onnxscript translation errors of many types
        text = f"{exc} {exc.__cause__ or ''}"
        if "data-dependent" in text or "data dependent" in text:
            raise UnsupportedError(
                f"tflite: torch.onnx.export cannot capture {type(model).__name__}: data-dependent "
                f"control flow ({first_line(exc, with_type=True)}). Rewrite the branch with torch.where"
            ) from exc
        raise ExportError(f"tflite: torch.onnx.export failed on {type(model).__name__}: {first_line(exc, 500, with_type=True)}") from exc
    finally:
        for lg, level in zip(chatty, levels):
            lg.setLevel(level)


def _calib_array(spec: ModelSpec, i: int) -> np.ndarray:
    """Calibration samples of input ``i`` stacked on the batch axis, in the tflite layout (N, ...)."""
    arr = np.concatenate([np.asarray(inputs[i]) for inputs in spec.calib_inputs], axis=0)
    perm = layout_perm(default_layout(arr.ndim), CHANNELS_LAST.get(arr.ndim, PLAIN))
    return arr.transpose(perm) if perm else arr


def _write_calibration(spec: ModelSpec, work: Path, quant: str | None) -> None:
    """Files onnx2tf reads: its sample-image file (else it downloads one) and our calibration data."""
    images = [np.asarray(inputs[0]) for inputs in spec.calib_inputs if len(inputs) and inputs[0].dim() == 4]
    np.save(work / CALIBRATION_IMAGE_FILE, _sample_images(images))
    if quant in ("integer", "full_integer"):
        for i in range(len(spec.input_names)):
            np.save(work / f"calib_{i}.npy", _calib_array(spec, i).astype(np.float32))


def _sample_images(images: list[np.ndarray]) -> np.ndarray:
    """(20, 128, 128, 3) float32 NHWC from the spec's own NCHW images (tiled, resized, 3 channels)."""
    n, h, w, c = CALIBRATION_IMAGE_SHAPE
    if not images:
        return np.full(CALIBRATION_IMAGE_SHAPE, 0.5, dtype=np.float32)
    batch = torch.from_numpy(np.concatenate([np.asarray(x, dtype=np.float32) for x in images], axis=0))
    batch = batch[torch.arange(n) % batch.shape[0]]
    chans = batch.shape[1]
    batch = batch[:, torch.arange(c) % chans]
    batch = torch.nn.functional.interpolate(batch, size=(h, w), mode="bilinear", align_corners=False)
    return batch.permute(0, 2, 3, 1).contiguous().numpy()


def _run_onnx2tf(args: dict, work: Path) -> None:
    (work / "args.json").write_text(json.dumps(args))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", HF_HUB_OFFLINE="1", NO_PROXY="", no_proxy="")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env[var] = _DEAD_PROXY
    log.info("tflite: running onnx2tf (timeout %.0f s)", CONVERT_TIMEOUT_S)
    try:
        proc = subprocess.run([sys.executable, "-c", _WORKER, str(work / "args.json")], cwd=work, env=env,
                              capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"tflite: onnx2tf ran past {CONVERT_TIMEOUT_S:.0f} s; raise EDGE_ONNX2TF_TIMEOUT_S") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-12:])
        raise ExportError(f"tflite: onnx2tf failed (exit {proc.returncode}); its last lines:\n{tail}")


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter, interpreter.get_input_details(), interpreter.get_output_details()


def _describe_io(path: Path, manifest: dict) -> None:
    """Fill the manifest's inputs/outputs with the .tflite's own shapes, dtypes, layouts, order."""
    _, ins, outs = _interpreter(path)
    manifest["inputs"] = _match(ins, manifest["inputs"], "input")
    manifest["outputs"] = _match(outs, manifest["outputs"], "output")


def _ordered(details: list[dict], entries: list[dict]) -> list[dict]:
    """Interpreter tensor details in manifest order: by name where names match, else by position."""
    by_name = {d["name"]: d for d in details}
    if all(e["name"] in by_name for e in entries):
        return [by_name[e["name"]] for e in entries]
    return list(details)


def _match(details: list[dict], entries: list[dict], kind: str) -> list[dict]:
    if len(details) != len(entries):
        raise ExportError(f"tflite: expected {len(entries)} {kind}s in the .tflite, found {len(details)}")
    out = []
    for d, e in zip(_ordered(details, entries), entries):
        shape = [int(s) for s in d["shape"]]
        entry = dict(e, shape=shape, dtype=np.dtype(d["dtype"]).name)
        entry["layout"] = _layout_of(e["shape"], shape, e["source_layout"], kind, e["name"])
        scale, zero_point = d.get("quantization", (0.0, 0))
        if scale and np.dtype(d["dtype"]).kind in "iu" and e["dtype"].startswith("float"):
            entry["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
        out.append(entry)
    return out


def _layout_of(source_shape: list[int], shape: list[int], source_layout: str, kind: str, name: str) -> str:
    last = CHANNELS_LAST.get(len(source_shape))
    if last:
        perm = layout_perm(source_layout, last)
        if [source_shape[p] for p in perm] == shape:
            return last
    if list(source_shape) == shape:
        return source_layout
    raise ExportError(
        f"tflite: {kind} {name!r} has shape {shape} in the .tflite, expected {source_shape} "
        "or its channels-last form"
    )
