"""The runner for language models: prefill and greedy decoding of a generation artifact.

Pushed beside ``runner.py`` on the device (stdlib + numpy + the runtime, Python 3.9+) and run
as a script with runner.py's arguments plus ``--prompt-tokens`` and ``--new-tokens``::

    python runner_generate.py --artifact model.pte --inputs sample_inputs.npz --new-tokens 64 --threads 4

It prints one JSON line like runner.py's (see its docstring for the generation fields). The
host imports it as ``edge.runner.runner_generate`` and validates artifacts with the same
generator classes the device runs.
"""
from __future__ import annotations

import os
import sys
import time

try:  # on the host: inside the edge package
    from edge.runner import runner as base
except ImportError:  # on the device: a plain module beside runner.py
    import runner as base

# Each generator: prefill(ids) -> logits of the last prompt token; decode(token, pos) ->
# logits of the next one; reset() forgets the sequence. Logits are flat numpy arrays (vocab,).

class ExecuTorchGenerator(object):
    """A .pte whose ``forward(tokens (1, T), input_pos (1,))`` keeps the KV cache inside."""

    prefill_mode = "batched"

    def __init__(self, path, manifest, threads):
        import numpy as np
        import torch
        base._set_executorch_threads(threads)
        base._register_quantized_kernels()
        try:  # programs using ExecuTorch's own SDPA / cache-update kernels
            import logging
            logging.disable(logging.INFO)  # its library loader logs at INFO on the root logger
            try:
                import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
            finally:
                logging.disable(logging.NOTSET)
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
    Interpreter = base._tflite_interpreter()[0]
    interpreter = Interpreter(model_path=path, num_threads=threads) if threads else Interpreter(model_path=path)
    parts = (manifest.get("generation") or {}).get("chunks")
    if parts:
        return PartsGenerator(interpreter, parts)
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


class PartsGenerator(object):
    """A .tflite whose step was converted in parts (manifest ``generation.chunks``): a signature per
    part, run in order for each token; the hidden state (1, dim) goes from one part to the next
    and each part keeps its own share of the cache."""

    prefill_mode = "token-by-token"

    def __init__(self, interpreter, parts):
        import numpy as np
        self._np = np
        self.parts = []
        for part in parts:
            runner = interpreter.get_signature_runner(part["signature"])
            dtypes = dict((i["name"], np.dtype(i["dtype"])) for i in part["inputs"])
            self.parts.append((runner, part, dtypes))
        self.reset()

    def reset(self):
        np = self._np
        self.caches = [(np.zeros(p["cache_shape"], dtype=d["k_cache"]), np.zeros(p["cache_shape"], dtype=d["v_cache"]))
                       if "cache_shape" in p else None for _, p, d in self.parts]

    def step(self, token, pos):
        """One token at ``pos`` through every part; the logits (vocab,)."""
        np = self._np
        value = None
        for i, (runner, part, dtypes) in enumerate(self.parts):
            feed = {}
            if part["embed"]:
                feed["tokens"] = np.asarray([[token]], dtype=dtypes["tokens"])
            else:
                feed["hidden"] = value
            if self.caches[i] is not None:
                feed["input_pos"] = np.asarray([pos], dtype=dtypes["input_pos"])
                feed["k_cache"], feed["v_cache"] = self.caches[i]
            out = runner(**feed)
            value = out["logits" if part["head"] else "hidden_out"]
            if self.caches[i] is not None:
                self.caches[i] = (out["k_cache_out"], out["v_cache_out"])
        return value.reshape(-1, value.shape[-1])[-1].copy()

    def prefill(self, ids):
        logits = None
        for i, tok in enumerate(ids):
            logits = self.step(tok, i)
        return logits

    def decode(self, token, pos):
        return self.step(token, pos)


def _by_manifest(details, entries):
    """Interpreter tensors in manifest order: by name, else by sorted name (onnx2tf's Identity, Identity_1, ...)."""
    by_name = dict((d["name"], d) for d in details)
    if all(e["name"] in by_name for e in entries):
        return [by_name[e["name"]] for e in entries]
    def key(d):
        tail = d["name"].rsplit("_", 1)
        return (tail[0], int(tail[1])) if len(tail) == 2 and tail[1].isdigit() else (d["name"], -1)
    return sorted(details, key=key)


def _llamacpp_generator(path, manifest, threads):
    return base._llamacpp().LlamaCppGenerator(path, manifest, threads)


GENERATORS = {"executorch": ExecuTorchGenerator, "tflite": _tflite_generator,
              "torchscript": _torchscript_generator, "llamacpp": _llamacpp_generator}


def _argmax(logits):
    import numpy as np
    return int(np.argmax(logits))


def generate(args, manifest):
    """Prefill the prompt, decode greedily; returns the result fields for a language model."""
    import numpy as np
    gen_info = manifest["generation"]
    prompt = [int(t) for t in np.asarray(base.load_inputs(args.inputs, args.artifact)[0]).reshape(-1)]
    n_prompt = args.prompt_tokens or len(prompt)
    if n_prompt > len(prompt) or n_prompt > gen_info["prefill_tokens"] or n_prompt < 1:
        raise ValueError("--prompt-tokens %d: expected 1..%d (the artifact's prefill length and the sample prompt)"
                         % (n_prompt, min(len(prompt), gen_info["prefill_tokens"])))
    if n_prompt + args.new_tokens > gen_info["context"]:
        raise ValueError("prompt %d + new tokens %d exceed the artifact's context of %d tokens"
                         % (n_prompt, args.new_tokens, gen_info["context"]))
    prompt = prompt[:n_prompt]
    context = base._context()
    context["temp_c_before"] = base._temp_c()
    start = time.perf_counter_ns()
    base.import_runtime(args.backend, args.runtime_dist)
    import_ms = (time.perf_counter_ns() - start) / 1e6
    baseline_rss = base._rss_mb()
    start = time.perf_counter_ns()
    gen = GENERATORS[args.backend](args.artifact, manifest, args.threads)
    load_ms = (time.perf_counter_ns() - start) / 1e6
    if args.warmup:
        greedy_generate(gen, prompt, min(args.new_tokens, 8))
        gen.reset()
    tokens, prefill_ms, decode_ms = greedy_generate(gen, prompt, args.new_tokens)
    context["temp_c_after"] = base._temp_c()
    decode_s = sum(decode_ms) / 1e3
    return {
        "latencies_ms": decode_ms, "import_ms": import_ms, "load_ms": load_ms, "first_inference_ms": prefill_ms,
        "baseline_rss_mb": baseline_rss, "context": context,
        "generation": {
            "prompt_tokens": n_prompt, "new_tokens": len(tokens), "tokens": tokens, "ttft_ms": prefill_ms,
            "prefill_ms": prefill_ms, "prefill_tok_s": n_prompt / (prefill_ms / 1e3) if prefill_ms else None,
            "decode_tok_s": len(decode_ms) / decode_s if decode_s else None,
            # the runtime's own figures where it has them (llama.cpp: the cache type it was created with)
            "kv_cache_bytes": getattr(gen, "kv_cache_bytes", None) or gen_info.get("kv_cache", {}).get("bytes"),
            "kv_cache_dtype": getattr(gen, "kv_cache_dtype", None) or gen_info.get("kv_cache", {}).get("dtype"),
            "prefill_mode": gen.prefill_mode,
        },
    }


def greedy_generate(gen, prompt, new_tokens):
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




def measure_generation(args):
    """The whole result line for a language model."""
    if not os.path.isfile(args.artifact):
        raise FileNotFoundError("artifact not found: %s" % args.artifact)
    manifest = base._manifest(args.artifact)
    if not manifest.get("generation"):
        raise ValueError("runner_generate.py needs a language-model artifact; its manifest has no generation block")
    out = generate(args, manifest)
    if args.backend == "tflite":
        runtime, version = base._tflite_interpreter()[1:]
    elif args.backend == "llamacpp":
        runtime, version = base._llamacpp().runtime_name(), base._llamacpp().runtime_version()
    else:
        dist = {"executorch": "executorch", "torchscript": "torch"}[args.backend]
        runtime = {"executorch": "executorch", "torchscript": "torch-lite-interpreter"}[args.backend]
        version = base._version(dist)
    out.update(schema_version=base.SCHEMA_VERSION, backend=args.backend, artifact=args.artifact,
               threads=args.threads, warmup=args.warmup, runtime=runtime, runtime_version=version,
               iterations=len(out["latencies_ms"]), peak_rss_mb=base._peak_rss_mb())
    return out


def _extra_args(p):
    p.add_argument("--prompt-tokens", type=int, default=None, help="prompt length (default: the whole sample prompt)")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens to generate greedily")


def main(argv=None):
    args = base.parse_args(sys.argv[1:] if argv is None else argv, _extra_args)
    if args.new_tokens < 1:
        sys.stderr.write("--new-tokens must be >= 1\n")
        return 2
    return base.json_main(measure_generation, args)


if __name__ == "__main__":
    sys.exit(main())
