"""Deploy an artifact to a target and time it there with the on-device runner.

``deploy`` pushes the artifact, its manifest, its sample inputs and the runner into
``<workdir>/artifacts/<sha256[:16]>/`` and ``<workdir>/runner.py`` (unchanged files are
skipped by sha256). ``bench`` runs the runner there and parses its one JSON line into a
:class:`BenchResult`; the raw samples are kept. Android targets without Python run the
runtime's own benchmark binary named in the target (``benchmark_model``,
``executor_runner``) instead, parsed into the same result.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import defaults
from .artifact import MANIFEST_NAME, SAMPLE_INPUTS_NAME, Artifact, load_artifact
from .device_lock import DEFAULT_DEVICE_WAIT_S, HOLD_MARGIN_S, DeviceLock, check_wait
from .devices import device_context, device_facts
from .errors import ConfigError, RunnerError
from .targets import Target, get_target
from .transports import connect
from .transports.base import Transport, tail

log = logging.getLogger(__name__)

RUNNER_PATH = Path(__file__).resolve().parent / "runner" / "runner.py"
RUNNER_GENERATE_PATH = RUNNER_PATH.with_name("runner_generate.py")  # imported by runner.py --generate
RUNNER_SCHEMA_VERSION = 1
MAX_FIGURE = 1e15  # no time (ms), size or count a device reports is this large; sums of samples stay finite


@dataclass
class BenchResult:
    """One measurement of one artifact on one target. Latencies in milliseconds."""

    backend: str
    target: str
    artifact_sha256: str
    size_bytes: int
    runtime: str
    runtime_version: str | None
    threads: int | None
    latency_ms: dict
    latencies_ms: list[float]
    load_ms: float | None
    first_inference_ms: float | None
    peak_rss_mb: float | None
    warmup: int | None = None
    iterations: int | None = None
    import_ms: float | None = None
    context: dict = field(default_factory=dict)
    # language models: the runner's generation block (tokens, ttft_ms, prefill/decode tok/s, kv bytes)
    # plus token_agreement_host / token_agreement_eager against the manifest's reference tokens
    generation: dict | None = None
    baseline_rss_mb: float | None = None  # after importing the runtime, before loading the model

    def to_dict(self) -> dict:
        return asdict(self)


def _resolve(target: str | Target, targets_file) -> Target:
    return target if isinstance(target, Target) else get_target(target, targets_file)


def latency_stats(samples_ms: list[float]) -> dict:
    """p50/p90/p99 (linear interpolation), mean, std (sample, n-1), min, max of raw samples."""
    xs = sorted(float(x) for x in samples_ms)
    if not xs:
        raise RunnerError("the runner returned no latency samples; expected at least one iteration")

    def pct(q: float) -> float:
        pos = (len(xs) - 1) * q
        lo, hi = math.floor(pos), math.ceil(pos)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    mean = sum(xs) / len(xs)
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0
    return {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "mean": mean,
            "std": math.sqrt(var), "min": xs[0], "max": xs[-1]}


def parse_runner_output(stdout: str, stderr: str = "", exit_code: int = 0) -> dict:
    """The runner's JSON result from its stdout; RunnerError when missing or an error."""
    result = None
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
                break
            except (ValueError, RecursionError):  # not JSON, a 5000-digit number, nesting too deep
                continue
    if result is None:
        raise RunnerError(f"the runner printed no JSON result (exit {exit_code}); stdout: "
                          f"{tail(stdout.strip(), 500) or '(empty)'}; stderr: "
                          f"{tail(stderr.strip(), 1500) or '(empty)'}")
    if "error" in result:
        raise RunnerError(f"the runner failed on the device: {result['error']}; stderr: "
                          f"{tail(stderr.strip(), 1500) or '(empty)'}")
    if result.get("schema_version") != RUNNER_SCHEMA_VERSION:
        raise RunnerError(f"expected runner schema_version {RUNNER_SCHEMA_VERSION}, found "
                          f"{result.get('schema_version')!r}; redeploy the runner")
    return result


def _samples(values) -> list[float]:
    """Raw latency samples from the device: finite non-negative numbers, or a RunnerError."""
    if values is None:
        return []
    if not isinstance(values, list):
        raise RunnerError(f"expected latencies_ms as a list of numbers, found {type(values).__name__}")
    out = []
    for x in values:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 <= x <= MAX_FIGURE:  # NaN fails too
            raise RunnerError(f"expected latencies_ms as finite numbers >= 0, found {x!r}; the runner on the "
                              "device is not edge's (redeploy it) or its clock misbehaves")
        out.append(float(x))
    return out


# fields of the runner's line (and of its generation block) -> (type, smallest allowed value); None is allowed
_RAW_FIELDS = {"runtime": (str, None), "runtime_version": (str, None), "threads": (int, 1), "warmup": (int, 0),
               "iterations": (int, 1), "load_ms": (float, 0), "first_inference_ms": (float, 0),
               "import_ms": (float, 0), "peak_rss_mb": (float, 0), "baseline_rss_mb": (float, 0)}
_GEN_FIELDS = {"prompt_tokens": (int, 0), "new_tokens": (int, 0), "ttft_ms": (float, 0), "prefill_ms": (float, 0),
               "prefill_tok_s": (float, 0), "decode_tok_s": (float, 0), "kv_cache_bytes": (int, 0),
               "kv_cache_dtype": (str, None)}


def _check_fields(values: dict, spec: dict, where: str) -> None:
    """Each field in ``spec`` is null or of its type (ints count as floats), finite and >= its minimum."""
    for key, (kind, low) in spec.items():
        value = values.get(key)
        kinds = (int, float) if kind is float else (kind,)
        if value is None or (isinstance(value, kinds) and not isinstance(value, bool)
                             and (kind is str or low <= value <= MAX_FIGURE)):  # NaN, inf, 10**400 fail
            continue
        what = "text" if kind is str else f"{'a whole number' if kind is int else 'a number'} from {low} to {MAX_FIGURE:g}"
        raise RunnerError(f"expected the runner's {where}{key} as {what} or null, found {value!r}; the device runs "
                          "a different runner (redeploy it) or the runtime misreports")


def make_result(raw: dict, artifact: Artifact, target_name: str) -> BenchResult:
    """Combine a runner (or native tool) result dict with the artifact's identity."""
    samples = _samples(raw.get("latencies_ms"))
    _check_fields(raw, _RAW_FIELDS, "")
    gen = raw.get("generation")
    if gen is not None:
        if not isinstance(gen, dict):
            raise RunnerError(f"expected the runner's generation as a mapping, found {type(gen).__name__}; redeploy it")
        _check_fields(gen, _GEN_FIELDS, "generation.")
        tokens = [] if gen.get("tokens") is None else gen["tokens"]
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise RunnerError(f"expected the runner's generation.tokens as a list of token ids, found {tokens!r:.200}")
    summary = raw.get("summary_ms") or {}
    if not isinstance(summary, dict):
        raise RunnerError(f"expected summary_ms as a mapping, found {type(summary).__name__}")
    _check_fields(summary, {k: (float, 0) for k in ("p50", "p90", "p99", "mean", "std", "min", "max")}, "summary_ms.")
    if not isinstance(raw.get("context") or {}, dict):
        raise RunnerError(f"expected the runner's context to be a mapping, found {type(raw['context']).__name__}; "
                          "the device runs a different runner: redeploy it")
    if samples:
        stats = latency_stats(samples)
    else:  # native tools that print only a summary
        stats = {k: summary.get(k) for k in ("p50", "p90", "p99", "mean", "std", "min", "max")}
        if stats["mean"] is None:
            raise RunnerError("the device returned neither latency samples nor a mean latency")
    return BenchResult(
        backend=artifact.backend, target=target_name, artifact_sha256=artifact.sha256,
        size_bytes=artifact.size_bytes, runtime=raw.get("runtime") or "unknown",
        runtime_version=raw.get("runtime_version"), threads=raw.get("threads"),
        latency_ms=stats, latencies_ms=samples, load_ms=raw.get("load_ms"),
        first_inference_ms=raw.get("first_inference_ms"), peak_rss_mb=raw.get("peak_rss_mb"),
        warmup=raw.get("warmup"), iterations=raw.get("iterations"), import_ms=raw.get("import_ms"),
        context=raw.get("context") or {}, generation=_generation(raw, artifact),
        baseline_rss_mb=raw.get("baseline_rss_mb"))


def _generation(raw: dict, artifact: Artifact) -> dict | None:
    """The runner's generation block, with the device's tokens checked against the host's."""
    gen = raw.get("generation")
    if not isinstance(gen, dict):
        return None
    gen = dict(gen)
    ref = (artifact.manifest.get("generation") or {}).get("reference") or {}
    tokens = gen.get("tokens") or []  # token ids, checked by make_result
    if ref and gen.get("prompt_tokens") == ref.get("prompt_tokens"):
        from .validate_lm import prefix_agreement

        n = min(len(tokens), len(ref.get("host_tokens") or []))
        if n:
            gen["token_agreement_host"] = prefix_agreement(ref["host_tokens"][:n], tokens[:n])
            gen["token_agreement_eager"] = prefix_agreement(ref["eager_tokens"][:n], tokens[:n])
            gen["tokens_checked"] = n
    if raw.get("peak_rss_mb") is not None and raw.get("baseline_rss_mb") is not None:
        gen["model_rss_mb"] = raw["peak_rss_mb"] - raw["baseline_rss_mb"]
    return gen


def remote_paths(target: Target, artifact: Artifact) -> dict[str, str]:
    """Where each deployed file lives on the device."""
    base = f"{target.workdir.rstrip('/')}/artifacts/{artifact.sha256[:16]}"
    paths = {"artifact": f"{base}/{artifact.path.name}", "manifest": f"{base}/{MANIFEST_NAME}",
             "runner": f"{target.workdir.rstrip('/')}/runner.py"}
    if artifact.manifest.get("generation"):  # language models: the runner's generation half too
        paths["runner_generate"] = f"{target.workdir.rstrip('/')}/runner_generate.py"
    for name in _runner_files(artifact.backend):  # modules the backend's runner loader imports
        paths[Path(name).stem] = f"{target.workdir.rstrip('/')}/{name}"
    if (artifact.dir / SAMPLE_INPUTS_NAME).exists():
        paths["inputs"] = f"{base}/{SAMPLE_INPUTS_NAME}"
    return paths


def _runner_files(backend: str) -> tuple[str, ...]:
    from .backends import BACKENDS, get_backend

    return get_backend(backend).runner_files if backend in BACKENDS else ()


def _push_all(tr: Transport, artifact: Artifact) -> dict:
    paths = remote_paths(tr.target, artifact)
    sources = {"artifact": artifact.path, "manifest": artifact.dir / MANIFEST_NAME,
               "runner": RUNNER_PATH, "runner_generate": RUNNER_GENERATE_PATH,
               "inputs": artifact.dir / SAMPLE_INPUTS_NAME}
    sources.update({Path(name).stem: RUNNER_PATH.with_name(name) for name in _runner_files(artifact.backend)})
    files = {}
    for key, remote in paths.items():
        res = tr.put(sources[key], remote)
        files[key] = {"remote_path": remote, "skipped": res.skipped, "bytes_sent": res.bytes_sent}
    return {"target": tr.target.name, "remote_dir": str(Path(paths["artifact"]).parent),
            "files": files, "bytes_sent": sum(f["bytes_sent"] for f in files.values())}


def deploy(artifact_path, target, targets_file=None, trust_new_host: bool = False) -> dict:
    """Push artifact, manifest, sample inputs and runner to the target's workdir."""
    artifact = load_artifact(artifact_path)
    tgt = _resolve(target, targets_file)
    with connect(tgt, trust_new_host) as tr:
        return _push_all(tr, artifact)


def _native_tool(target: Target, backend: str) -> str | None:
    """The host path of the backend's own benchmark binary, when the target names one."""
    from .backends import get_backend

    field_name = get_backend(backend).native_tool
    return getattr(target, field_name, None) if field_name else None


def generation_args(artifact: Artifact, prompt_tokens: int | None, new_tokens: int | None) -> list[str]:
    """Runner arguments for a language model (checked here, so bad sizes fail before any push)."""
    gen = artifact.manifest.get("generation")
    if not gen:
        if prompt_tokens is not None or new_tokens is not None:
            raise ConfigError(f"--prompt-tokens/--new-tokens apply to language models; {artifact.path} is a "
                              f"{artifact.manifest.get('model', {}).get('metric', 'non-generative')} model")
        return []
    p_max, ctx = int(gen["prefill_tokens"]), int(gen["context"])
    prompt = p_max if prompt_tokens is None else int(prompt_tokens)
    if not 1 <= prompt <= p_max:
        raise ConfigError(f"expected --prompt-tokens between 1 and {p_max} (the artifact's prefill length), "
                          f"found {prompt}; re-export with a longer prefill or shorten the prompt")
    new = min(DEFAULT_NEW_TOKENS, ctx - prompt) if new_tokens is None else int(new_tokens)
    if not 2 <= new <= ctx - prompt:  # the first token comes from the prefill; decode times the rest
        raise ConfigError(f"expected --new-tokens between 2 and {ctx - prompt} (context {ctx} minus a "
                          f"{prompt}-token prompt; the first new token comes from the prefill), found {new}")
    return ["--prompt-tokens", str(prompt), "--new-tokens", str(new)]


DEFAULT_NEW_TOKENS = 64


DEFAULT_WARMUP, DEFAULT_ITERATIONS, DEFAULT_TIMEOUT_S = defaults.WARMUP, defaults.ITERATIONS, defaults.TIMEOUT_S


def bench(artifact_path, target, warmup: int = DEFAULT_WARMUP, iterations: int = DEFAULT_ITERATIONS,
          threads: int | None = None, targets_file=None, trust_new_host: bool = False,
          timeout_s: float = DEFAULT_TIMEOUT_S,
          prompt_tokens: int | None = None, new_tokens: int | None = None,
          device_wait_s: float = DEFAULT_DEVICE_WAIT_S) -> BenchResult:
    """Deploy, run the runner on the device, and return the parsed measurement.

    The measurement holds the device's bench lock (:mod:`edge.device_lock`): a bench that
    finds another one running there waits up to ``device_wait_s`` for it (0 = refuse at
    once), then raises DeviceBusyError. Pushing files needs no lock (puts are atomic).

    Language models (a manifest with ``generation``) prefill ``prompt_tokens`` of the sample
    prompt (default: all P) and decode ``new_tokens`` greedily (default: 64, within the context);
    ``iterations`` does not apply to them, ``warmup`` > 0 runs one short untimed generation first.
    """
    if iterations < 1 or warmup < 0:
        raise ConfigError(f"expected iterations >= 1 and warmup >= 0, found {iterations}, {warmup}")
    if not isinstance(timeout_s, (int, float)) or not math.isfinite(timeout_s) or timeout_s <= 0:
        raise ConfigError(f"expected a timeout in seconds > 0 and finite, found {timeout_s!r}")
    check_wait(device_wait_s)
    artifact = load_artifact(artifact_path)
    gen_argv = generation_args(artifact, prompt_tokens, new_tokens)
    tgt = _resolve(target, targets_file)
    dist = runtime_dist(tgt, artifact.backend)  # before anything reaches the device
    with connect(tgt, trust_new_host) as tr:
        deployed = _push_all(tr, artifact)
        files = deployed["files"]
        native = None if gen_argv or dist else _native_tool(tgt, artifact.backend)
        lock = DeviceLock(tr, hold_s=timeout_s + HOLD_MARGIN_S, wait_s=device_wait_s)
        if native:
            remote_tool = _push_native_tool(tr, native)
            with lock:
                raw = _run_native(tr, artifact, remote_tool, files["artifact"]["remote_path"], warmup,
                                  iterations, threads, timeout_s)
        else:
            runner = files["runner_generate" if gen_argv else "runner"]["remote_path"]
            argv = [tgt.python, runner, "--artifact",
                    files["artifact"]["remote_path"], "--backend", artifact.backend,
                    "--warmup", str(warmup), "--iterations", str(iterations)]
            if "inputs" in files:
                argv += ["--inputs", files["inputs"]["remote_path"]]
            if threads:
                argv += ["--threads", str(threads)]
            if dist:
                argv += ["--runtime-dist", dist]
            with lock:
                res = tr.run(argv + gen_argv, timeout_s=timeout_s, check=False)
            raw = parse_runner_output(res.stdout, res.stderr, res.exit_code)
        facts = device_facts(tr)
    result = make_result(raw, artifact, tgt.name)
    result.context["device_facts"] = facts
    log.info("%s on %s: p50 %.3f ms over %d samples", artifact.path.name, tgt.name,
             result.latency_ms["p50"] or result.latency_ms["mean"], len(result.latencies_ms))
    return result


def runtime_dist(tgt: Target, backend: str) -> str | None:
    """The distribution ``tgt`` names to run ``backend``'s files, where it is not the backend's
    default (its first ``runtime_modules`` entry, what the runner loads unless told): else None."""
    from .backends import get_backend

    dist = tgt.runtime_dists.get(backend)
    if dist is None:
        return None
    allowed = get_backend(backend).runtime_dists
    if dist not in allowed:
        raise ConfigError(f"target '{tgt.name}' ({tgt.source}): runtime_dists.{backend} = {dist!r}; expected one of "
                          f"{', '.join(allowed)} (the distributions {backend} runs with); fix or drop the entry")
    return None if dist == allowed[0] else dist


def _push_native_tool(tr: Transport, tool: str) -> str:
    """Push the runtime's benchmark binary into ``<workdir>/bin/``; its path on the device."""
    local = Path(tool).expanduser()
    remote_tool = f"{tr.target.workdir.rstrip('/')}/bin/{local.name}"
    tr.put(local, remote_tool)
    tr.run(["chmod", "755", remote_tool], timeout_s=30)
    return remote_tool


def _run_native(tr: Transport, artifact: Artifact, remote_tool: str, remote_artifact: str, warmup: int,
                iterations: int, threads: int | None, timeout_s: float) -> dict:
    from .backends import get_backend
    from .bench_native import native_bench_argv

    be = get_backend(artifact.backend)
    context = device_context(tr)
    argv = native_bench_argv(artifact.backend, remote_tool, remote_artifact, warmup, iterations, threads)
    res = tr.run(argv, timeout_s=timeout_s, check=False)
    raw = be.parse_native_output(res.stdout + "\n" + res.stderr, warmup)
    raw.update(backend=artifact.backend, artifact=remote_artifact, threads=threads,
               context=context)
    raw["warmup"] = warmup if raw.get("warmup") is None else raw["warmup"]
    return raw
