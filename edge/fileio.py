"""Reading files with clear errors (UTF-8, YAML, JSON) and writing them so that a reader never sees half of one."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from collections.abc import Hashable
from typing import Any

import yaml

from .errors import ConfigError


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    A failure (disk full, interrupt) leaves the old file, or no file, never a partial one.
    OSError from creating the file propagates; callers turn it into their own EdgeError.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_utf8(path: str | Path, what: str) -> str:
    """The text of a UTF-8 file; undecodable bytes are a ConfigError naming the file and the byte.

    OSError (missing, unreadable) propagates: callers say what they were reading.
    """
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: expected a UTF-8 {what}, found bytes that are not UTF-8 at byte {exc.start} "
                          f"({data[exc.start:exc.start + 4]!r}); save the file as UTF-8") from None


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (otherwise a silent typo)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        for i, key in enumerate(keys):
            if isinstance(key, Hashable) and key in keys[:i]:
                raise yaml.constructor.ConstructorError("while reading a mapping", node.start_mark,
                                                        f"duplicate key {key!r}",
                                                        node.value[i][0].start_mark)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str | Path) -> Any:
    """Parse YAML text (no key given twice); every parse failure is a ConfigError naming ``source`` (and line)."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ConfigError(f"{source}:{mark.line + 1 if mark else '?'}: invalid YAML, a parse error: "
                          f"{exc.problem or exc.context}; fix the syntax on that line") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: expected YAML nested a few levels deep, found nesting too deep to "
                          "read; flatten it") from None
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:  # PyYAML's constructors: 2001-13-01,
        # !!float abc, a 5000-digit integer ...
        raise ConfigError(f"{source}: invalid YAML value ({exc}); quote it if it is meant as text") from None


def parse_json(text: str, source: str | Path) -> Any:
    """Parse JSON text; every parse failure (syntax, nesting too deep, a huge integer) is a ConfigError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ConfigError(f"{source}: expected JSON nested a few levels deep, found nesting too deep to "
                          "read") from None
    except ValueError as exc:  # JSONDecodeError, and int() past sys.get_int_max_str_digits()
        raise ConfigError(f"{source}: expected valid JSON, found a parse error: {exc}") from None


def read_yaml_file(path: Path, what: str) -> Any:
    """Parse a YAML file (UTF-8, no key given twice); errors become ConfigError naming the file (and line)."""
    try:
        text = read_utf8(path, what)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    return parse_yaml(text, path)
