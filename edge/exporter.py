"""Export orchestration: compress (when a plan is given), convert, validate, publish, cache.

Each artifact goes to its own folder ``out_dir/<model>-<backend>[-<plan tag>]/``. It is
built in a hidden temporary folder beside it and renamed into place at the end, so a
failed export never leaves a half-written artifact. Finished artifacts are stored in a
content-addressed cache (``EDGE_CACHE_DIR`` or ``~/.cache/edge/artifacts``) keyed by the
weights, plan, backend, tool versions and input shapes; a re-export with the
same key copies from the cache and converts nothing (``manifest["cache_hit"]`` is true).

Concurrency: a cache entry is built in a private temporary folder beside it and renamed into
place whole, so a reader never sees an entry without its manifest. Exporters of the same key
take ``<cache>/.locks/<key>.lock`` (flock, released by the kernel when a process dies): the
second one waits, then reuses the first one's entry instead of converting again. A cache entry
that fails its checks (damaged by hand) is set aside and rebuilt.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import inspect
import json
import logging
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import __version__
from .artifact import MANIFEST_SCHEMA_VERSION, SAMPLE_INPUTS_NAME, Artifact, load_artifact, sha256_file
from .backends import get_backend
from .backends.base import to_artifact_inputs
from .errors import ConfigError, EdgeError, ExportError, UnsupportedError

if TYPE_CHECKING:  # annotations only
    from .models.base import ModelSpec

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$EDGE_CACHE_DIR`` or ``~/.cache/edge/artifacts``."""
    return Path(os.environ.get("EDGE_CACHE_DIR") or "~/.cache/edge/artifacts").expanduser()


def export(model_ref_or_spec: Any, backend: str, out_dir: str | Path, plan: Any = None,
           use_cache: bool = True, cache_dir: str | Path | None = None, validate: bool = True) -> Artifact:
    """Export one model to one backend and return the published artifact.

    ``model_ref_or_spec`` is a ModelSpec or anything :func:`edge.models.load_model` takes.
    With ``plan`` the model is compressed first (``edge.compress.apply_plan``). With
    ``validate`` the artifact is run on the host and compared with the eager fp32 model;
    a failure raises ValidationError and publishes nothing.
    """
    spec = _spec(model_ref_or_spec)
    be = get_backend(backend)
    reasons = be.unsupported(plan)
    if reasons:
        raise UnsupportedError(f"{backend} cannot express this plan: " + "; ".join(reasons))
    plan_dict = plan_to_dict(plan)
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / artifact_dir_name(spec.name, backend, plan_dict)
    key = cache_key(spec, plan_dict, backend, be.tool_versions())
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if use_cache and (hit := _from_cache(cache, key, dest)) is not None:
        return hit
    store = use_cache and validate  # the cache holds validated artifacts only
    with _key_lock(cache, key) if store else contextlib.nullcontext():
        if store and (hit := _from_cache(cache, key, dest, discard_bad=True)) is not None:
            return hit  # another process built it while this one waited for the lock
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=out_dir))
        try:
            _build(spec, be, plan, plan_dict, tmp, key, validate)
            if store:
                _store(tmp, cache, key)
            return load_artifact(_swap_into_place(tmp, dest), verify=False)  # hashed while building
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def export_all(model_ref_or_spec: Any, backends: list[str], out_dir: str | Path, plan: Any = None,
               **kwargs: Any) -> dict[str, Artifact | EdgeError]:
    """Export to each backend in turn; a failure is recorded (as its EdgeError) and the rest go on."""
    spec = _spec(model_ref_or_spec)
    results: dict[str, Artifact | EdgeError] = {}
    for backend in backends:
        try:
            results[backend] = export(spec, backend, out_dir, plan=plan, **kwargs)
        except EdgeError as exc:
            log.warning("%s/%s failed: %s", spec.name, backend, exc)
            results[backend] = exc
    return results


def _spec(model_ref_or_spec: Any):
    if isinstance(model_ref_or_spec, str):
        from .models import load_model

        return load_model(model_ref_or_spec)
    return model_ref_or_spec


def _build(spec: ModelSpec, be: Any, plan: Any, plan_dict: dict | None, tmp: Path, key: str, validate: bool) -> Artifact:
    model, options = spec.model.eval(), {}
    if plan is not None:
        from .compress import apply_plan

        model, options = apply_plan(spec.fresh_model(), plan, be.name, spec)
    try:
        artifact = be.export(model, spec, tmp, options)
    except EdgeError:
        raise
    except Exception as exc:  # a toolchain failure the backend did not anticipate
        raise ExportError(f"{be.name}: export of {spec.name} failed: {type(exc).__name__}: {exc}") from exc
    m = artifact.manifest
    m.update(
        schema_version=MANIFEST_SCHEMA_VERSION, sha256=sha256_file(artifact.path),
        size_bytes=artifact.path.stat().st_size, model=_model_entry(spec), cache_key=key, cache_hit=False,
        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        compression=None if plan_dict is None else {"plan": plan_dict, "recipe": plan_dict.get("recipe", []),
                                                    "options": options},
        validation=None,
    )
    m["tool_versions"]["edge"] = __version__
    if spec.generation is not None:  # a language model: the sample prompt's token ids
        np.savez(tmp / SAMPLE_INPUTS_NAME, spec.generation.prompt.numpy().reshape(-1))
    else:
        samples = to_artifact_inputs([t.numpy() for t in spec.example_inputs], m["inputs"])
        np.savez(tmp / SAMPLE_INPUTS_NAME, *samples)
    if validate and spec.generation is not None:
        from .validate_lm import validate_lm

        m["validation"] = validate_lm(artifact, spec)
        m["generation"]["reference"] = m["validation"].pop("reference")
    elif validate:
        from .validate import validate as run_validation

        m["validation"] = run_validation(artifact, spec)
    artifact.write_manifest()
    return artifact


def _model_entry(spec: ModelSpec) -> dict:
    return {"name": spec.name, "source": spec.source, "params": spec.num_params(), "metric": spec.metric}


def _swap_into_place(tmp: Path, dest: Path) -> Path:
    """Rename ``tmp`` to ``dest``; an older artifact there is moved aside first, then removed.

    Another process may publish to ``dest`` at the same time: whichever renames last wins,
    and neither fails nor leaves a folder half of one and half of the other.
    """
    olds = []
    try:
        for _ in range(100):
            try:
                tmp.rename(dest)  # atomic; refused while dest is a folder with files
                return dest
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:12]}")
            try:
                dest.rename(old)
                olds.append(old)
            except FileNotFoundError:  # the other process moved it aside first
                pass
        raise ExportError(f"could not publish {dest}: other processes kept replacing it; "
                          "export to separate output folders")
    finally:
        for old in olds:
            shutil.rmtree(old, ignore_errors=True)


def _publish_from_cache(entry: Path, dest: Path) -> Artifact:
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        _link_or_copy(entry, tmp)
        artifact = load_artifact(tmp)  # re-hashes the cached file
        artifact.manifest["cache_hit"] = True
        artifact.write_manifest()
        return load_artifact(_swap_into_place(tmp, dest), verify=False)  # the same files, renamed
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _from_cache(cache: Path, key: str, dest: Path, discard_bad: bool = False) -> Artifact | None:
    """Publish the cache entry ``key`` to ``dest``; None when there is none (or a bad one).

    With ``discard_bad`` (under the key's lock) a bad entry is moved aside and removed.
    """
    entry = cache / key
    if not (entry / "manifest.json").exists():
        return None
    try:
        artifact = _publish_from_cache(entry, dest)
    except ConfigError as exc:  # its files no longer match its manifest
        if discard_bad:  # (without the lock: look again under it before saying anything)
            log.warning("cache entry %s is damaged (%s); rebuilding it", entry, exc)
            aside = cache / f".{key[:12]}.bad-{uuid.uuid4().hex[:12]}"
            with contextlib.suppress(OSError):
                entry.rename(aside)
            shutil.rmtree(aside, ignore_errors=True)
        return None
    except FileNotFoundError:  # set aside as damaged by another process while being read
        return None
    log.info("%s: cache hit %s", dest.name, key[:12])
    return artifact


@contextlib.contextmanager
def _key_lock(cache: Path, key: str) -> Iterator[None]:
    """Hold ``<cache>/.locks/<key>.lock`` (the kernel drops it if this process dies).

    An unwritable cache is no reason to fail the export: it then goes on without the lock.
    """
    try:
        (cache / ".locks").mkdir(parents=True, exist_ok=True)
        f = open(cache / ".locks" / f"{key}.lock", "a+b")
    except OSError as exc:
        log.warning("cannot lock cache key %s in %s (%s); exporting without the lock", key[:12], cache, exc)
        f = None
    if f is None:
        yield
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is exporting cache key %s; waiting to reuse its result", key[:12])
            fcntl.flock(f, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _store(built: Path, cache: Path, key: str) -> None:
    """Copy a finished artifact into the cache (atomically; a concurrent writer's copy wins)."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.tmp-", dir=cache))
        _link_or_copy(built, tmp)
        try:
            tmp.rename(cache / key)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:  # an unwritable cache must not fail the export itself
        log.warning("could not store artifact in cache %s: %s", cache, exc)


def _link_or_copy(src_dir: Path, dst_dir: Path) -> None:
    """Hard-link the files of ``src_dir`` into ``dst_dir`` (copy across file systems).

    Manifests are rewritten by replacing the file, never in place, so a link never lets a
    change to a published artifact reach the cache.
    """
    for f in src_dir.iterdir():
        try:
            os.link(f, dst_dir / f.name)
        except OSError:
            shutil.copy2(f, dst_dir / f.name)


def plan_to_dict(plan: Any) -> dict | None:
    """A plan (object with to_dict, dataclass, dict, or list of technique configs) as a JSON dict."""
    if plan is None:
        return None
    if hasattr(plan, "to_dict"):
        plan = plan.to_dict()
    elif isinstance(plan, (list, tuple)):
        plan = {"recipe": [c.to_dict() if hasattr(c, "to_dict") else c for c in plan]}
    if not isinstance(plan, dict):
        raise ExportError(f"expected a plan object, dict or list of technique configs, found {type(plan).__name__}")
    return json.loads(json.dumps(plan, sort_keys=True, default=str))


def artifact_dir_name(model: str, backend: str, plan_dict: dict | None) -> str:
    """``<model>-<backend>[-<plan tag>]``; the tag is the plan's own or a short hash of it."""
    name = f"{safe_name(model)}-{backend}"
    if plan_dict is None:
        return name
    tag = plan_dict.get("tag") or plan_dict.get("name") or hashlib.sha256(
        json.dumps(plan_dict, sort_keys=True).encode()).hexdigest()[:8]
    return f"{name}-{safe_name(str(tag))}"


def safe_name(text: str) -> str:
    """``text`` as one path component: letters, digits, ``._-``; others become ``_``; no leading dot."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in text).lstrip(".")
    return cleaned or "_"


def cache_key(spec: ModelSpec, plan_dict: dict | None, backend: str, tool_versions: dict) -> str:
    """sha256 over weights, model code, plan JSON, backend (and its exporter's code), tool versions
    and input shapes.

    Export options are not a separate input: the plan determines them (``apply_plan``).
    """
    h = hashlib.sha256()
    for name, tensor in sorted(spec.model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(_model_code(spec.model).encode())
    h.update(_backend_code(backend).encode())
    meta = {
        "plan": plan_dict, "backend": backend, "tools": tool_versions, "edge": __version__,
        "inputs": [[n, list(t.shape), str(t.dtype)] for n, t in zip(spec.input_names, spec.example_inputs)],
        "outputs": list(spec.output_names), "schema": MANIFEST_SCHEMA_VERSION,
        "generation": spec.generation.config.to_dict() if spec.generation is not None else None,
    }
    if spec.generation is not None:  # validation is part of the artifact: it depends on the text
        for window in list(spec.eval_inputs) + [(spec.generation.prompt,)]:
            h.update(window[0].numpy().tobytes())
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _backend_code(backend: str) -> str:
    """The source of the backend's module (how it wraps and lowers a model: an edit changes the key)."""
    try:
        return inspect.getsource(sys.modules[type(get_backend(backend)).__module__])
    except (OSError, TypeError, KeyError):
        return backend


def _model_code(model: torch.nn.Module) -> str:
    """The model's structure and the source of its module classes (a code edit changes the key)."""
    parts = [repr(model)]
    for cls in sorted({type(m) for m in model.modules()}, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        try:
            parts.append(inspect.getsource(cls))
        except (OSError, TypeError):
            parts.append(f"{cls.__module__}.{cls.__qualname__}")
    return "\n".join(parts)
