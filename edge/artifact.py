"""Artifact: an exported model file plus the ``manifest.json`` beside it.

Layout on disk (one folder per artifact)::

    <dir>/model.<suffix>        the artifact (.ptl, .pte, .tflite)
    <dir>/manifest.json         this module's schema (below)
    <dir>/sample_inputs.npz     example inputs in the artifact's own layout (arr_0, arr_1, ...)

Manifest keys (schema_version 1): ``schema_version``, ``backend``, ``file``, ``sha256``,
``size_bytes``, ``model`` {name, source, params, metric}, ``inputs``/``outputs``: lists of
{name, shape, dtype, layout} where shape/dtype/layout are those of the artifact itself
(TFLite image inputs are NHWC) and ``source_layout`` is the eager model's layout (layouts:
NCHW/NHWC, NCW/NWC, NCDHW/NDHWC, or ``plain`` for tensors without a channel axis); an
int8/uint8 tensor of a float model also has ``quantization`` {scale, zero_point}
(real = (q - zero_point) * scale). ``compression``: null, or {plan, recipe, options} (the
applied plan as JSON, its technique configs, the backend options it set). ``delegation``:
backend specific coverage or null; ExecuTorch: {delegate, delegated_subgraphs,
delegated_nodes, portable_nodes, coverage, by_operator {op: {delegated, portable}},
portable_ops}. ``tool_versions`` {distribution: version}, ``notes`` (list of strings, e.g.
"optimize_for_mobile unavailable: ..."), ``validation`` (the result of :mod:`edge.validate`:
metric, score, max_abs_error, rel_error, cosine, samples, precision, tolerance, passed),
``cache_key`` (sha256 of the export's inputs, see :mod:`edge.exporter`), ``cache_hit``
(true when this folder was copied from the artifact cache), ``created_at`` (UTC, ISO 8601).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .fileio import parse_json, read_utf8, write_atomic

MANIFEST_SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SAMPLE_INPUTS_NAME = "sample_inputs.npz"


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


@dataclass
class Artifact:
    """An artifact file and its manifest (a plain dict, the JSON schema above)."""

    path: Path
    manifest: dict = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return self.manifest["backend"]

    @property
    def dir(self) -> Path:
        return self.path.parent

    @property
    def sha256(self) -> str:
        return self.manifest["sha256"]

    @property
    def size_bytes(self) -> int:
        return int(self.manifest["size_bytes"])

    def write_manifest(self) -> None:
        write_atomic(self.dir / MANIFEST_NAME, json.dumps(self.manifest, indent=2, sort_keys=True, default=str))


def load_artifact(path: str | Path, verify: bool = True) -> Artifact:
    """Load an artifact from its file (manifest beside it) or from its folder.

    ``verify`` re-hashes the file against the manifest's sha256; only a caller that has just
    written or verified the very same files may skip it.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        manifest_path = p / MANIFEST_NAME
    else:
        manifest_path = p.parent / MANIFEST_NAME
    if not manifest_path.exists():
        raise ConfigError(
            f"expected an artifact file with {MANIFEST_NAME} beside it, found none at {manifest_path}; "
            "pass a file written by `edge export`"
        )
    try:
        manifest = parse_json(read_utf8(manifest_path, "manifest"), manifest_path)
    except OSError as exc:
        raise ConfigError(f"cannot read {manifest_path}: {exc.strerror}; re-run `edge export`") from None
    except ConfigError as exc:
        raise ConfigError(f"{exc}; re-run `edge export`") from None
    if not isinstance(manifest, dict):
        raise ConfigError(f"{manifest_path}: expected a JSON object, found {type(manifest).__name__}; "
                          "re-run `edge export`")
    if manifest.get("schema_version") != MANIFEST_SCHEMA_VERSION:
        raise ConfigError(
            f"{manifest_path}: expected manifest schema_version {MANIFEST_SCHEMA_VERSION}, "
            f"found {manifest.get('schema_version')!r}; re-export with this version of edge"
        )
    _check_fields(manifest, manifest_path)
    file_path = manifest_path.parent / manifest["file"]
    if not p.is_dir() and p.resolve() != file_path.resolve():
        raise ConfigError(f"{p} is not the artifact its manifest names ({manifest['file']})")
    if not file_path.exists():
        raise ConfigError(f"{manifest_path} names {manifest['file']}, which is missing; re-run `edge export`")
    actual = sha256_file(file_path) if verify else manifest["sha256"]
    if actual != manifest["sha256"]:
        raise ConfigError(f"{file_path} has sha256 {actual[:16]}..., its manifest says {manifest['sha256'][:16]}...: "
                          "the file changed after export; re-run `edge export`")
    return Artifact(path=file_path, manifest=manifest)


def _check_fields(manifest: dict, where: Path) -> None:
    """The manifest fields that become paths and names on a device must be what edge writes."""
    sha, name = manifest.get("sha256"), manifest.get("file")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ConfigError(f"{where}: expected sha256 as 64 lowercase hex digits, found {sha!r}; re-run `edge export`")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or ".." in name:
        raise ConfigError(f"{where}: expected file to be a plain file name beside the manifest, found {name!r}; "
                          "re-run `edge export`")
    from .backends import BACKENDS

    if not isinstance(manifest.get("backend"), str) or manifest["backend"] not in BACKENDS:
        raise ConfigError(f"{where}: expected backend one of {', '.join(BACKENDS)}, found {manifest.get('backend')!r}; "
                          "re-run `edge export`")
    _check_count("size_bytes", manifest.get("size_bytes"), 0, where)
    gen = manifest.get("generation")
    if gen is None:
        return
    if not isinstance(gen, dict):
        raise ConfigError(f"{where}: expected generation as a mapping or null, found {gen!r}; re-run `edge export`")
    _check_count("generation.prefill_tokens", gen.get("prefill_tokens"), 1, where)
    _check_count("generation.context", gen.get("context"), gen["prefill_tokens"], where)
    ref = gen.get("reference")
    if ref is None:
        return
    ok = isinstance(ref, dict) and all(isinstance(ref.get(k), list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in ref[k]) for k in ("host_tokens", "eager_tokens"))
    if not ok:
        raise ConfigError(f"{where}: expected generation.reference with host_tokens and eager_tokens as lists of "
                          f"token ids, found {ref!r}; re-run `edge export`")


def _check_count(key: str, value: object, low: int, where: Path) -> None:
    """A whole number >= ``low`` (sizes, token counts) or a ConfigError naming the field."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{where}: expected {key} as a whole number >= {low}, found {value!r}; re-run `edge export`")
