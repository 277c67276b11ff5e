"""Fuzz cases shared by tests/test_fuzz.py and benchmarks/fuzz.py: one strategy and one checker per loader.

Each :class:`Loader` turns a generated input (text or bytes, as a file or a device's stdout) into an
object the rest of edge trusts. The property: the loader returns an object whose invariants hold
(numbers finite and in range, required fields present with the right types, names safe) or raises
an :class:`~edge.errors.EdgeError`. Any other exception is a *traceback*; an accepted object that
breaks an invariant is *accepted-but-invalid*. Inputs are mutated real documents (fields replaced
with arbitrary YAML/JSON values or raw YAML/JSON snippets, deleted, or added) or raw junk.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml
from hypothesis import strategies as st

from edge.artifact import Artifact, load_artifact
from edge.backends import get_backend
from edge.benchmark import make_result, parse_runner_output
from edge.compress import TECHNIQUES
from edge.errors import EdgeError
from edge.planner import load_plan
from edge.profiles import SHIPPED_DIR, load_profile
from edge.targets import parse_targets_file
from fuzz_checks import check_artifact, check_plan, check_profile, check_result, check_targets

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# --- generic values -------------------------------------------------------------------------

_SPECIAL_TEXT = ["", " ", "auto", "..", "../../etc/passwd", "/abs", "a\x00b", "a\nb", "é日本", "0", "-1", "nan",
                 "none", "null", "true", "tflite", "local", "x" * 300]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10), st.integers(), st.just(10**400), st.just(-(10**30)),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e-300, 1e300, float("nan")]),
    st.text(max_size=12), st.sampled_from(_SPECIAL_TEXT))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6) | st.integers(-3, 3), inner, max_size=3), max_leaves=8)

# Raw snippets spliced in where a placeholder was dumped: things a dumper never writes.
_DEEP = 3000
RAW_YAML = ["2001-13-01", "2001-02-30 25:61:00", "!!float abc", "!!int 0x", "!!int 1x", "!!timestamp x",
            "!!binary AAAA", "!!set {a: 1}", "!!python/object:os.system x", "!!str", "~", ".nan", "-.inf",
            "0o777", "0x1F", "1_000", "1:20", "2.0e+400", "1" * 5000, "*undefined", "&a [*a]", "{? [a, [b]] : 1}",
            "[" * _DEEP, "- " * _DEEP + "a", "!!omap [1]", "!!pairs [1]", "'unterminated", "@x", "`x", "%x", "|-"]
RAW_JSON = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" * 5000, "[" * _DEEP + "]" * _DEEP, "{",
            '"\\ud800"', '"a\\u0000b"', "{}", "[]", "true", "null", "-0", "1.5", "[1, 2", '{"a": 1, "a": 2}']


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every node below the root, as a key/index path."""
    out = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        out.append(prefix + (key,))
        out += _paths(value, prefix + (key,))
    return out


def _parent(doc: Any, path: tuple) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


@st.composite
def mutated(draw, base: Any, raws: list[str]) -> tuple[Any, list[str]]:
    """``base`` with 1-3 fields replaced, spliced with a raw snippet, deleted, or added."""
    doc, spliced = copy.deepcopy(base), []
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _parent(doc, path), path[-1]
        op = draw(st.sampled_from(["replace", "replace", "raw", "delete", "add"]))
        if op == "replace":
            parent[key] = draw(VALUES)
        elif op == "raw":
            parent[key] = f"__RAW_{len(spliced)}__"
            spliced.append(draw(st.sampled_from(raws)))
        elif op == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(VALUES)
        else:
            parent.append(draw(VALUES))
    return doc, spliced


def render(doc: Any, spliced: list[str], fmt: str) -> str:
    """YAML or JSON text of ``doc`` with each placeholder replaced by its raw snippet."""
    if fmt == "json":
        text = json.dumps(doc, allow_nan=True, ensure_ascii=False)
    else:
        text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    for i, raw in enumerate(spliced):
        text = text.replace(f'"__RAW_{i}__"' if fmt == "json" else f"__RAW_{i}__", raw)
    return text


def documents(bases: list[Any], fmt: str) -> st.SearchStrategy[bytes]:
    """File contents: a base as is, a mutated base, or junk text/bytes."""
    raws = RAW_JSON if fmt == "json" else RAW_YAML
    valid = st.sampled_from(bases).map(lambda b: render(b, [], fmt))
    mutants = st.sampled_from(bases).flatmap(lambda b: mutated(b, raws)).map(lambda m: render(*m, fmt))
    junk = st.one_of(st.text(max_size=200), VALUES.map(lambda v: render(v, [], fmt)), st.sampled_from(raws))
    return st.one_of(valid, mutants, mutants, mutants, junk.map(str.encode), st.binary(max_size=200)).map(
        lambda t: t if isinstance(t, bytes) else t.encode("utf-8", "surrogatepass"))




# --- real documents to mutate -----------------------------------------------------------------

PROFILES = [yaml.safe_load((SHIPPED_DIR / f"{n}.yaml").read_text())
            for n in ("raspberry-pi-5-8gb", "local-x86_64", "pixel-8-pro")]
TARGETS = [{"targets": {
    "pi5": {"transport": "ssh", "host": "192.168.1.50", "port": 22, "user": "pi", "identity_file": "~/.ssh/id",
            "known_hosts": "~/.ssh/known_hosts", "profile": "raspberry-pi-5-8gb", "workdir": "/home/pi/edge",
            "python": "python3", "runtime_dists": {"llamacpp": "llama-cpp-python"}},
    "pixel": {"transport": "adb", "serial": "1A2B3C", "profile": "pixel-8-pro", "workdir": "/data/local/tmp/edge",
              "benchmark_model": "~/android/benchmark_model", "executor_runner": "~/android/executor_runner"},
    "wifi": {"transport": "adb", "host": "192.168.1.60", "port": 5555, "profile": "pixel-8-pro"},
    "here": {"transport": "local", "profile": "local-x86_64", "workdir": "/tmp/edge-fuzz-local"}}}]
_PREDICTED = {"size_bytes": 61816, "size_mb": 0.059, "peak_memory_mb": 30.06, "latency_ms": 0.208, "accuracy": 1.0}
PLANS = [{
    "schema_version": 1, "tag": "linear:int8", "model": "tiny-mlp", "profile": "raspberry-pi-5-8gb",
    "constraints": {"min_accuracy": 0.99, "max_latency_ms": None, "max_size_mb": None, "memory_budget_mb": 4096,
                    "storage_budget_mb": 8192},
    "backend": "tflite", "recipe": [{"type": "int8_dynamic", "groups": []}], "groups": {"linear": "int8"},
    "structure": None, "predicted": dict(_PREDICTED), "accuracy_basis": "top1 vs fp32 on 32 calibration inputs",
    "pareto": [{"backend": "tflite", "structure": "none", "groups": {"linear": "int8"}, "recipe": ["int8"],
                "recipe_configs": [{"type": "int8_dynamic", "groups": []}], "predicted": dict(_PREDICTED),
                "accuracy_basis": "measured"}],
    "reasons": ["chosen tflite: linear=int8", "llamacpp rejected: it runs language models only"], "notes": []},
    {"model": "tiny-llama", "profile": "raspberry-pi-zero-2w", "backend": "executorch",
     "constraints": {"min_accuracy": 0.9, "max_size_mb": 25, "context": 128, "min_decode_tok_s": 5.0},
     "recipe": [c().to_dict() for c in TECHNIQUES], "predicted": {**_PREDICTED, "generation": {
         "context": 128, "kv_cache_mb": 0.1, "ttft_ms": 3.0, "prefill_tok_s": 900.0, "decode_tok_s": 80.0}},
     "groups": {"ffn": "int4_g32", "attention": "int8"}, "structure": "ffn prune 25%", "notes": ["assumed"]}]
MODEL_BYTES = b"fuzz model bytes"
_TENSOR = {"name": "x", "shape": [1, 8], "dtype": "float32", "layout": "plain", "source_layout": "plain"}
_MANIFEST = {"schema_version": 1, "backend": "torchscript", "file": "model.ptl",
             "sha256": hashlib.sha256(MODEL_BYTES).hexdigest(), "size_bytes": len(MODEL_BYTES),
             "model": {"name": "tiny-mlp", "source": "zoo", "params": 212, "metric": "top1"},
             "inputs": [_TENSOR], "outputs": [{**_TENSOR, "name": "y", "shape": [1, 4]}], "compression": None,
             "delegation": None, "tool_versions": {"torch": "2.13.0"}, "notes": [],
             "validation": {"metric": "top1", "score": 1.0, "cosine": 0.9999, "passed": True},
             "cache_key": "0" * 64, "cache_hit": False, "created_at": "2026-01-01T00:00:00+00:00"}
_TOKENS = [116, 104, 101, 32, 108, 97]
MANIFESTS = [_MANIFEST, {**_MANIFEST, "model": {**_MANIFEST["model"], "metric": "perplexity"}, "generation": {
    "prefill_tokens": 6, "context": 32, "vocab": 256, "prefill_mode": "batched", "cache": "io",
    "reference": {"prompt_tokens": 6, "host_tokens": _TOKENS, "eager_tokens": _TOKENS}}}]
_CONTEXT = {"hostname": "pi", "kernel": "6.6", "machine": "aarch64", "python": "3.11", "cpu_count": 4,
            "cpu_governor": "performance", "cpu_freq_khz": 2400000, "temp_c_before": 45.0, "temp_c_after": 47.5}
_RUN = {"schema_version": 1, "runtime": "torch", "runtime_version": "2.13.0", "backend": "torchscript",
        "artifact": "/w/model.ptl", "threads": 4, "warmup": 2, "iterations": 3, "latencies_ms": [1.5, 1.25, 1.75],
        "import_ms": 800.0, "load_ms": 12.5, "first_inference_ms": 3.0, "peak_rss_mb": 150.0, "context": _CONTEXT}
RUNNER_LINES = [_RUN, {**_RUN, "iterations": None, "baseline_rss_mb": 120.0, "generation": {
    "prompt_tokens": 6, "new_tokens": 6, "tokens": _TOKENS, "ttft_ms": 9.0, "prefill_ms": 9.0,
    "prefill_tok_s": 666.7, "decode_tok_s": 100.0, "kv_cache_bytes": 98304, "prefill_mode": "batched"}}]
NATIVE = [("tflite", (FIXTURES / f).read_text()) for f in ("tflite_benchmark_model_mi11.txt",
                                                            "tflite_benchmark_model_logcat.txt")] + \
         [("executorch", (FIXTURES / f).read_text()) for f in ("executorch_executor_runner.txt",
                                                                "executorch_executor_runner_old.txt")]
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[+-]?\d+)?")
_BAD_NUMBERS = [".", "...", "0", "00", "0.0", "1e999", "9" * 400, "1.2.3", "-1", "", "1e-999", "7"]


@st.composite
def native_outputs(draw) -> tuple[str, str, int]:
    """(backend, the tool's output with numbers swapped for junk and lines dropped, warmup)."""
    backend, text = draw(st.sampled_from(NATIVE))
    kind = draw(st.sampled_from(["numbers", "numbers", "lines", "junk", "as is"]))
    if kind == "numbers":
        text = _NUMBER.sub(lambda m: draw(st.sampled_from(_BAD_NUMBERS)) if draw(st.booleans()) else m.group(), text)
    elif kind == "lines":
        text = "\n".join(ln for ln in text.splitlines() if draw(st.integers(0, 3)))
    elif kind == "junk":
        text = draw(st.text(max_size=300))
    return backend, text, draw(st.integers(0, 5))


def runner_stdout() -> st.SearchStrategy[str]:
    lines = documents(RUNNER_LINES, "json").map(lambda b: b.decode("utf-8", "replace"))
    return st.tuples(st.sampled_from(["", "banner\n", "{not json\n"]), lines).map("".join)


# --- loaders -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Loader:
    name: str
    inputs: st.SearchStrategy
    load: Callable[[Any, Path], Any]  # (generated input, scratch folder) -> the accepted object
    check: Callable[[Any], list[str]]  # the accepted object's invariant violations


def _write(scratch: Path, name: str, data: bytes) -> Path:
    path = scratch / name
    path.write_bytes(data)
    return path


def _load_manifest(data: bytes, scratch: Path) -> Artifact:
    (scratch / "model.ptl").write_bytes(MODEL_BYTES)
    _write(scratch, "manifest.json", data)
    return load_artifact(scratch)


_RUN_ARTIFACT = Artifact(Path("/nonexistent/model.ptl"), MANIFESTS[1])


def _load_native(case: tuple[str, str, int], scratch: Path):
    backend, text, warmup = case
    raw = get_backend(backend).parse_native_output(text, warmup)
    return make_result(raw, _RUN_ARTIFACT, "dev")


LOADERS = [
    Loader("profile", documents(PROFILES, "yaml"), lambda d, s: load_profile(_write(s, "p.yaml", d)), check_profile),
    Loader("targets", documents(TARGETS, "yaml"), lambda d, s: parse_targets_file(_write(s, "t.yaml", d)),
           check_targets),
    Loader("plan", st.sampled_from(["yaml", "json"]).flatmap(lambda f: documents(PLANS, f).map(lambda d: (d, f))),
           lambda c, s: load_plan(_write(s, f"plan.{c[1]}", c[0])), check_plan),
    Loader("manifest", documents(MANIFESTS, "json"), _load_manifest, check_artifact),
    Loader("runner-json", runner_stdout(),
           lambda out, s: make_result(parse_runner_output(out), _RUN_ARTIFACT, "dev"), check_result),
    Loader("native-output", native_outputs(), _load_native, check_result),
]


def classify(loader: Loader, case: Any, scratch: Path) -> tuple[str, str]:
    """("accepted" | "rejected" | "traceback" | "invalid", detail) for one input."""
    try:
        obj = loader.load(case, scratch)
    except EdgeError as exc:
        return "rejected", str(exc)
    except Exception:  # noqa: BLE001 - any other exception is the bug being looked for
        return "traceback", traceback.format_exc(limit=-3)
    try:
        problems = loader.check(obj)
    except Exception as exc:  # noqa: BLE001 - using the accepted object fails: it is not valid
        problems = [f"checking the accepted object raised {type(exc).__name__}: {exc}"]
    return ("invalid", "; ".join(problems)) if problems else ("accepted", "")
