"""The on-device runner: time one exported artifact with the runtime the device has.

Self-contained (stdlib + numpy + the runtime; Python 3.9+), pushed to the device and run
there as a script::

    python runner.py --artifact model.pte --backend executorch --inputs sample_inputs.npz \\
        --warmup 5 --iterations 50 --threads 4

It prints exactly ONE JSON line on stdout (anything the runtime prints goes to stderr)::

    {"schema_version": 1, "runtime", "runtime_version", "backend", "artifact", "threads",
     "warmup", "iterations", "latencies_ms": [raw samples], "import_ms", "load_ms", "first_inference_ms",
     "peak_rss_mb", "context": {"hostname", "kernel", "machine", "python", "cpu_count",
     "cpu_governor", "cpu_freq_khz", "temp_c_before", "temp_c_after"}}

Only the invoke call is timed (time.perf_counter_ns). On failure the line is
{"schema_version": 1, "error": "..."} and the exit code is 1 (2 for bad arguments).

Language models (a manifest with a ``generation`` block) are run with ``--generate``: the
prompt is token ids (``arr_0`` of the inputs file; the device needs no tokenizer), cut to
``--prompt-tokens``; the runner prefills, then decodes ``--new-tokens`` greedily and adds::

    "generation": {"prompt_tokens", "new_tokens", "tokens": [ids out], "ttft_ms", "prefill_ms",
                   "prefill_tok_s", "decode_tok_s", "kv_cache_bytes", "prefill_mode"},
    "baseline_rss_mb": RSS after importing the runtime, before loading the model

with ``latencies_ms`` holding the raw per-token decode latencies. ``GENERATORS`` holds one
class per runtime (the host validates artifacts with the same classes).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
import traceback

SCHEMA_VERSION = 1
SUFFIX_BACKENDS = {".pte": "executorch", ".tflite": "tflite", ".ptl": "torchscript", ".pt": "torchscript"}


def _read_sys(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _temp_c():
    raw = _read_sys("/sys/class/thermal/thermal_zone0/temp")
    try:
        return round(int(raw) / 1000.0, 1) if raw is not None else None
    except ValueError:
        return None


def _context():
    freq = _read_sys("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_governor": _read_sys("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cpu_freq_khz": int(freq) if freq and freq.isdigit() else None,
    }


def _rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def _peak_rss_mb():
    # VmHWM is this process's own high-water mark. ru_maxrss on Linux survives execve, so a
    # runner started by a big parent (the host's edge process) would report the parent's peak.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def _version(dist, module=None):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # not installed as a distribution: fall back to the module attribute
        return getattr(module, "__version__", None)


def load_inputs(inputs_path, artifact_path):
    """Input arrays in order (arr_0, arr_1, ...), from the npz or the manifest's shapes."""
    import numpy as np

    if inputs_path:
        with np.load(inputs_path) as data:
            keys = sorted(data.files, key=lambda k: int(k.split("_")[-1]) if k.split("_")[-1].isdigit() else k)
            return [data[k] for k in keys]
    manifest = os.path.join(os.path.dirname(os.path.abspath(artifact_path)), "manifest.json")
    if not os.path.exists(manifest):
        raise ValueError("no --inputs given and no manifest.json beside the artifact to take shapes from")
    with open(manifest) as f:
        specs = json.load(f).get("inputs", [])
    rng = np.random.default_rng(0)
    arrays = []
    for spec in specs:
        dtype = np.dtype(spec["dtype"].replace("torch.", ""))
        if dtype.kind in "iu":
            arrays.append(rng.integers(0, 2, size=spec["shape"]).astype(dtype))
        else:
            arrays.append(rng.standard_normal(spec["shape"]).astype(dtype))
    return arrays


def _manifest(artifact_path):
    path = os.path.join(os.path.dirname(os.path.abspath(artifact_path)), "manifest.json")
    with open(path) as f:
        return json.load(f)


def _input_names(artifact_path):
    manifest = os.path.join(os.path.dirname(os.path.abspath(artifact_path)), "manifest.json")
    try:
        with open(manifest) as f:
            return [spec.get("name") for spec in json.load(f).get("inputs", [])]
    except (OSError, ValueError):
        return []


# Each loader returns (runtime, runtime_version, invoke) where invoke() runs one inference.

def _register_quantized_kernels():
    # Programs with quantized embeddings call quantized_decomposed::* kernels that live in a
    # separate library; without it loading fails with OperatorMissing (0x14).
    try:
        import executorch.kernels.quantized  # noqa: F401
    except ImportError:
        pass


def _set_executorch_threads(threads):
    if threads:
        import torch
        torch.set_num_threads(threads)
        try:  # XNNPACK's threadpool is ExecuTorch's own, not torch's
            from executorch.extension.pybindings import portable_lib
            portable_lib._unsafe_reset_threadpool(threads)
        except (ImportError, AttributeError):
            pass


def load_executorch(path, arrays, threads):
    import torch
    from executorch.runtime import Runtime

    _set_executorch_threads(threads)
    _register_quantized_kernels()
    method = Runtime.get().load_program(path).load_method("forward")
    tensors = [torch.from_numpy(a) for a in arrays]
    return "executorch", _version("executorch"), lambda: method.execute(tensors)


def _tflite_interpreter():
    try:
        from ai_edge_litert.interpreter import Interpreter
        import ai_edge_litert
        return Interpreter, "ai-edge-litert", _version("ai-edge-litert", ai_edge_litert)
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter
        import tflite_runtime
        return Interpreter, "tflite-runtime", _version("tflite-runtime", tflite_runtime)
    except ImportError:
        pass
    import tensorflow as tf
    return tf.lite.Interpreter, "tensorflow-lite", tf.__version__


def load_tflite(path, arrays, threads):
    Interpreter, runtime, version = _tflite_interpreter()
    interpreter = Interpreter(model_path=path, num_threads=threads) if threads else Interpreter(model_path=path)
    details = interpreter.get_input_details()
    if len(details) != len(arrays):
        raise ValueError("the model has %d inputs, the inputs file %d" % (len(details), len(arrays)))
    names = _input_names(path)
    by_name = {d["name"]: d for d in details}
    if len(names) == len(arrays) and all(n in by_name for n in names):
        details = [by_name[n] for n in names]
    for detail, array in zip(details, arrays):
        if list(detail["shape"]) != list(array.shape):
            interpreter.resize_tensor_input(detail["index"], array.shape)
    interpreter.allocate_tensors()
    for detail, array in zip(details, arrays):
        interpreter.set_tensor(detail["index"], array.astype(detail["dtype"], copy=False))
    return runtime, version, interpreter.invoke


def load_torchscript(path, arrays, threads):
    import torch
    from torch.jit.mobile import _load_for_lite_interpreter

    if threads:
        torch.set_num_threads(threads)
    module = _load_for_lite_interpreter(path)
    tensors = [torch.from_numpy(a) for a in arrays]

    def invoke():
        with torch.no_grad():
            return module(*tensors)
    return "torch-lite-interpreter", torch.__version__, invoke


LOADERS = {"executorch": load_executorch, "tflite": load_tflite, "torchscript": load_torchscript}


# ---- generation (language models) ------------------------------------------------------
# Each generator: prefill(ids) -> logits of the last prompt token; decode(token, pos) ->
# logits of the next one; reset() forgets the sequence. Logits are flat numpy arrays (vocab,).

class ExecuTorchGenerator(object):
    """A .pte whose ``forward(tokens (1, T), input_pos (1,))`` keeps the KV cache inside."""

    prefill_mode = "batched"

    def __init__(self, path, manifest, threads):
        import numpy as np
        import torch
        _set_executorch_threads(threads)
        _register_quantized_kernels()
        try:  # programs using ExecuTorch's own SDPA / cache-update kernels
            import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
        except ImportError:
            pass
        from executorch.runtime import Runtime
        self._np, self._torch = np, torch
        self.method = Runtime.get().load_program(path).load_method("forward")

    def reset(self):
        pass  # slots after the current position are never read (causal mask from input_pos)

    def _run(self, ids, pos):
        torch = self._torch
        out = self.method.execute([torch.tensor([list(ids)], dtype=torch.long), torch.tensor([pos], dtype=torch.long)])
        return out[0].numpy().reshape(-1, out[0].shape[-1])[-1]

    def prefill(self, ids):
        return self._run(ids, 0)

    def decode(self, token, pos):
        return self._run([token], pos)


class IOCacheGenerator(object):
    """An artifact whose step takes and returns the caches: (tokens, input_pos, k, v) -> (logits, k, v)."""

    def __init__(self, call, zeros, manifest, batched):
        ins = manifest["inputs"]
        self.call, self.zeros = call, zeros
        self.shapes = [(ins[2]["shape"], ins[2]["dtype"]), (ins[3]["shape"], ins[3]["dtype"])]
        self.prefill_mode = "batched" if batched else "token-by-token"
        self.reset()

    def reset(self):
        self.k, self.v = [self.zeros(shape, dtype) for shape, dtype in self.shapes]

    def _run(self, ids, pos):
        logits, self.k, self.v = self.call(ids, pos, self.k, self.v)
        return logits

    def prefill(self, ids):
        if self.prefill_mode == "batched":
            return self._run(list(ids), 0)
        logits = None
        for i, tok in enumerate(ids):
            logits = self._run([tok], i)
        return logits

    def decode(self, token, pos):
        return self._run([token], pos)


def _torchscript_generator(path, manifest, threads):
    import numpy as np
    import torch
    from torch.jit.mobile import _load_for_lite_interpreter
    if threads:
        torch.set_num_threads(threads)
    module = _load_for_lite_interpreter(path)

    def call(ids, pos, k, v):
        with torch.no_grad():
            logits, k, v = module(torch.tensor([list(ids)], dtype=torch.long), torch.tensor([pos], dtype=torch.long), k, v)
        return logits.numpy().reshape(-1, logits.shape[-1])[-1], k, v

    def zeros(shape, dtype):
        return torch.zeros(shape, dtype=getattr(torch, dtype))
    del np
    return IOCacheGenerator(call, zeros, manifest, batched=True)


def _tflite_generator(path, manifest, threads):
    import numpy as np
    Interpreter = _tflite_interpreter()[0]
    interpreter = Interpreter(model_path=path, num_threads=threads) if threads else Interpreter(model_path=path)
    interpreter.allocate_tensors()
    ins = _by_manifest(interpreter.get_input_details(), manifest["inputs"])
    outs = _by_manifest(interpreter.get_output_details(), manifest["outputs"])

    def call(ids, pos, k, v):
        interpreter.set_tensor(ins[0]["index"], np.asarray([ids], dtype=ins[0]["dtype"]))
        interpreter.set_tensor(ins[1]["index"], np.asarray([pos], dtype=ins[1]["dtype"]))
        interpreter.set_tensor(ins[2]["index"], k)
        interpreter.set_tensor(ins[3]["index"], v)
        interpreter.invoke()
        logits = interpreter.get_tensor(outs[0]["index"])
        return (logits.reshape(-1, logits.shape[-1])[-1].copy(), interpreter.get_tensor(outs[1]["index"]).copy(),
                interpreter.get_tensor(outs[2]["index"]).copy())

    def zeros(shape, dtype):
        return np.zeros(shape, dtype=dtype)
    return IOCacheGenerator(call, zeros, manifest, batched=False)


def _by_manifest(details, entries):
    """Interpreter tensors in manifest order: by name, else by sorted name (onnx2tf's Identity, Identity_1, ...)."""
    by_name = dict((d["name"], d) for d in details)
    if all(e["name"] in by_name for e in entries):
        return [by_name[e["name"]] for e in entries]
    def key(d):
        tail = d["name"].rsplit("_", 1)
        return (tail[0], int(tail[1])) if len(tail) == 2 and tail[1].isdigit() else (d["name"], -1)
    return sorted(details, key=key)


GENERATORS = {"executorch": ExecuTorchGenerator, "tflite": _tflite_generator,
              "torchscript": _torchscript_generator}


def _argmax(logits):
    import numpy as np
    return int(np.argmax(logits))


def generate(args, manifest):
    """Prefill the prompt, decode greedily; returns the result fields for a language model."""
    import numpy as np
    gen_info = manifest["generation"]
    prompt = [int(t) for t in np.asarray(load_inputs(args.inputs, args.artifact)[0]).reshape(-1)]
    n_prompt = args.prompt_tokens or len(prompt)
    if n_prompt > len(prompt) or n_prompt > gen_info["prefill_tokens"] or n_prompt < 1:
        raise ValueError("--prompt-tokens %d: expected 1..%d (the artifact's prefill length and the sample prompt)"
                         % (n_prompt, min(len(prompt), gen_info["prefill_tokens"])))
    if n_prompt + args.new_tokens > gen_info["context"]:
        raise ValueError("prompt %d + new tokens %d exceed the artifact's context of %d tokens"
                         % (n_prompt, args.new_tokens, gen_info["context"]))
    prompt = prompt[:n_prompt]
    context = _context()
    context["temp_c_before"] = _temp_c()
    start = time.perf_counter_ns()
    import_runtime(args.backend)
    import_ms = (time.perf_counter_ns() - start) / 1e6
    baseline_rss = _rss_mb()
    start = time.perf_counter_ns()
    gen = GENERATORS[args.backend](args.artifact, manifest, args.threads)
    load_ms = (time.perf_counter_ns() - start) / 1e6
    if args.warmup:
        _greedy(gen, prompt, min(args.new_tokens, 8))
        gen.reset()
    tokens, prefill_ms, decode_ms = _greedy(gen, prompt, args.new_tokens)
    context["temp_c_after"] = _temp_c()
    decode_s = sum(decode_ms) / 1e3
    return {
        "latencies_ms": decode_ms, "import_ms": import_ms, "load_ms": load_ms, "first_inference_ms": prefill_ms,
        "baseline_rss_mb": baseline_rss, "context": context,
        "generation": {
            "prompt_tokens": n_prompt, "new_tokens": len(tokens), "tokens": tokens, "ttft_ms": prefill_ms,
            "prefill_ms": prefill_ms, "prefill_tok_s": n_prompt / (prefill_ms / 1e3) if prefill_ms else None,
            "decode_tok_s": len(decode_ms) / decode_s if decode_s else None,
            "kv_cache_bytes": gen_info.get("kv_cache", {}).get("bytes"), "prefill_mode": gen.prefill_mode,
        },
    }


def _greedy(gen, prompt, new_tokens):
    """(new token ids, prefill+first-token ms, per-token decode ms)."""
    start = time.perf_counter_ns()
    tokens = [_argmax(gen.prefill(prompt))]
    prefill_ms = (time.perf_counter_ns() - start) / 1e6
    decode_ms = []
    pos = len(prompt)
    while len(tokens) < new_tokens:
        start = time.perf_counter_ns()
        tokens.append(_argmax(gen.decode(tokens[-1], pos)))
        decode_ms.append((time.perf_counter_ns() - start) / 1e6)
        pos += 1
    return tokens, prefill_ms, decode_ms


def import_runtime(backend):
    """Import the runtime's modules so that load_ms measures the model load, not the import."""
    if backend == "tflite":
        _tflite_interpreter()
    else:
        import torch  # noqa: F401
        if backend == "executorch":
            import executorch.runtime  # noqa: F401


def measure(args):
    """Load, warm up, time; returns the result dict."""
    if not os.path.isfile(args.artifact):
        raise FileNotFoundError("artifact not found: %s" % args.artifact)
    common = {"schema_version": SCHEMA_VERSION, "backend": args.backend, "artifact": args.artifact,
              "threads": args.threads, "warmup": args.warmup}
    if args.generate:
        manifest = _manifest(args.artifact)
        if not manifest.get("generation"):
            raise ValueError("--generate needs a language-model artifact; its manifest has no generation block")
        out = generate(args, manifest)
        version = _version({"executorch": "executorch", "torchscript": "torch"}.get(args.backend, "ai-edge-litert"))
        runtime = {"executorch": "executorch", "torchscript": "torch-lite-interpreter"}.get(
            args.backend) or _tflite_interpreter()[1]
        if args.backend == "tflite":
            version = _tflite_interpreter()[2]
        out.update(common, runtime=runtime, runtime_version=version, iterations=len(out["latencies_ms"]),
                   peak_rss_mb=_peak_rss_mb())
        return out
    context = _context()
    context["temp_c_before"] = _temp_c()
    arrays = load_inputs(args.inputs, args.artifact)
    start = time.perf_counter_ns()
    import_runtime(args.backend)
    import_ms = (time.perf_counter_ns() - start) / 1e6
    start = time.perf_counter_ns()
    runtime, version, invoke = LOADERS[args.backend](args.artifact, arrays, args.threads)
    load_ms = (time.perf_counter_ns() - start) / 1e6
    start = time.perf_counter_ns()
    invoke()
    first_ms = (time.perf_counter_ns() - start) / 1e6
    for _ in range(args.warmup):
        invoke()
    latencies_ms = []
    for _ in range(args.iterations):
        start = time.perf_counter_ns()
        invoke()
        latencies_ms.append((time.perf_counter_ns() - start) / 1e6)
    context["temp_c_after"] = _temp_c()
    return {
        "schema_version": SCHEMA_VERSION, "runtime": runtime, "runtime_version": version,
        "backend": args.backend, "artifact": args.artifact, "threads": args.threads,
        "warmup": args.warmup, "iterations": args.iterations, "latencies_ms": latencies_ms,
        "import_ms": import_ms, "load_ms": load_ms, "first_inference_ms": first_ms, "peak_rss_mb": _peak_rss_mb(),
        "context": context,
    }


def parse_args(argv):
    p = argparse.ArgumentParser(description="time one artifact on this device; prints one JSON line")
    p.add_argument("--artifact", required=True)
    p.add_argument("--backend", choices=sorted(LOADERS), help="default: from the file suffix")
    p.add_argument("--inputs", help="npz with arr_0, arr_1, ... (default: random from manifest.json)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--generate", action="store_true", help="language models: prefill + greedy decode")
    p.add_argument("--prompt-tokens", type=int, default=None, help="with --generate: prompt length (default all)")
    p.add_argument("--new-tokens", type=int, default=32, help="with --generate: tokens to generate")
    args = p.parse_args(argv)
    if args.backend is None:
        args.backend = SUFFIX_BACKENDS.get(os.path.splitext(args.artifact)[1])
        if args.backend is None:
            p.error("cannot tell the backend from %s; pass --backend" % args.artifact)
    if args.iterations < 1 or args.warmup < 0:
        p.error("--iterations must be >= 1 and --warmup >= 0")
    if args.new_tokens < 1:
        p.error("--new-tokens must be >= 1")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Runtimes print banners and warnings; keep stdout for the one JSON line.
    sys.stdout.flush()
    saved_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        result, code = measure(args), 0
    except Exception as exc:  # report any runtime failure as data, not a traceback
        result = {"schema_version": SCHEMA_VERSION, "error": "%s: %s" % (type(exc).__name__, exc),
                  "backend": args.backend, "artifact": args.artifact}
        code = 1
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
