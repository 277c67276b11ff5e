"""Target inventory: the concrete devices `edge` can reach.

A target names one device, how to reach it (``transport``) and which device profile it is.
Targets are read from, in order (later files override earlier ones by name):

1. ``targets/*.yaml`` in the repository,
2. ``~/.config/edge/targets.yaml``,

or only from ``--targets-file FILE`` when given. The target ``local`` (this machine) is
always defined unless a file redefines it. Schema::

    targets:
      pi5-desk:
        transport: ssh            # local | ssh | adb
        host: 192.168.1.50        # or a Host alias from ~/.ssh/config
        port: 22
        user: pi
        identity_file: ~/.ssh/id_ed25519
        known_hosts: ~/.ssh/known_hosts
        profile: raspberry-pi-5-8gb
        workdir: /home/pi/edge    # relative paths are relative to the login directory
        python: python3
        connect_retries: 3        # retries of a refused/unanswered connection (backoff doubles)
        connect_backoff_s: 1.0    # first wait between connection attempts
        stall_timeout_s: 60       # a transfer or a silent link with no progress this long fails
        runtime_dists:            # which installed distribution runs a backend's files, where a
          llamacpp: llama-cpp-python  # backend has a choice (default: the first the backend names)
        # adb only: serial; any target: benchmark_model, executor_runner (host paths of the
        # runtimes' benchmark binaries, pushed once; bench runs them instead of the runner)

Fields are type-checked here; what a transport needs (a host, a serial) and its defaults
(``workdir``, ``python``) are the transport's own (``validate_fields`` in
:mod:`edge.transports`), read through the registry. SSH targets also honour
``~/.ssh/config`` (``Host`` aliases, ``HostName``, ``User``, ``Port``, ``IdentityFile``)
through :func:`resolve_ssh`.
"""
from __future__ import annotations

import getpass
import logging
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .backends import BACKENDS
from .errors import ConfigError
from .fileio import parse_yaml, read_utf8
from .transports import TRANSPORTS, transport_class

log = logging.getLogger(__name__)

LOCAL_PROFILE = "local-x86_64"
REPO_TARGETS_DIR = Path(__file__).resolve().parents[1] / "targets"
USER_TARGETS_FILE = Path("~/.config/edge/targets.yaml")
SSH_CONFIG_FILE = Path("~/.ssh/config")
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"  # target names: typed on command lines, shown in tables


@dataclass(frozen=True)
class Target:
    """One reachable device. ``source`` is the file it came from (for error messages)."""

    name: str
    transport: str
    profile: str
    workdir: str
    python: str = "python3"
    host: str | None = None
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    serial: str | None = None
    benchmark_model: str | None = None
    executor_runner: str | None = None
    connect_retries: int = 3
    connect_backoff_s: float = 1.0
    stall_timeout_s: float = 60.0
    runtime_dists: dict[str, str] = field(default_factory=dict)  # backend -> distribution on the device
    source: str = "<built-in>"

    def to_dict(self) -> dict:
        """The target as plain data (no key material: only file paths)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


# field -> (allowed python types, human description)
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "transport": ((str,), "one of " + ", ".join(TRANSPORTS)),
    "host": ((str,), "a host name, address or ~/.ssh/config alias"),
    "port": ((int,), "an integer 1-65535"),
    "user": ((str,), "a user name"),
    "identity_file": ((str,), "a path to a private key file"),
    "known_hosts": ((str,), "a path to a known_hosts file"),
    "profile": ((str,), "a device profile name (see `edge profiles list`)"),
    "workdir": ((str,), "a directory path on the device"),
    "python": ((str,), "the Python interpreter on the device"),
    "serial": ((str,), "an adb serial (adb devices) or host:port"),
    "benchmark_model": ((str,), "host path of the TFLite benchmark_model binary"),
    "executor_runner": ((str,), "host path of the ExecuTorch executor_runner binary"),
    "connect_retries": ((int,), "an integer 0-20 (connection attempts after the first)"),
    "connect_backoff_s": ((int, float), "seconds 0-60 before the first retry (it doubles, up to 30)"),
    "stall_timeout_s": ((int, float), "seconds 1-3600 a transfer or link may make no progress"),
    "runtime_dists": ((dict,), "a mapping of backend name to the distribution that runs its files on the device "
                               "(e.g. {llamacpp: llama-cpp-python})"),
}
# numeric field -> inclusive range
_FIELD_RANGES: dict[str, tuple[float, float]] = {
    "port": (1, 65535), "connect_retries": (0, 20), "connect_backoff_s": (0, 60),
    "stall_timeout_s": (1, 3600),
}


def local_target() -> Target:
    """The built-in target for this machine."""
    values = transport_class("local").validate_fields(
        "local", {"transport": "local", "profile": LOCAL_PROFILE})
    return Target(name="local", **values)


def _fail(source: str, name: str, field: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{source}: target '{name}': field '{field}' = {value!r} is invalid; "
                       f"expected {allowed}")


def parse_target(name: str, raw: Any, source: str) -> Target:
    """Validate one target mapping from a YAML file and apply its transport's defaults."""
    if not isinstance(raw, dict):
        raise _fail(source, name, "<target>", raw, "a mapping of the fields "
                    + ", ".join(_FIELD_TYPES))
    for key, value in raw.items():
        if key not in _FIELD_TYPES:
            raise _fail(source, name, key, value, "only the fields " + ", ".join(_FIELD_TYPES))
        types, allowed = _FIELD_TYPES[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise _fail(source, name, key, value, allowed)
        if isinstance(value, str) and (not value.strip() or re.search(r"[\x00-\x1f\x7f]", value)):
            raise _fail(source, name, key, value, allowed + ", non-empty and on one line")
    _check_runtime_dists(source, name, raw.get("runtime_dists"))
    transport = raw.get("transport")
    if transport not in TRANSPORTS:
        raise _fail(source, name, "transport", transport, _FIELD_TYPES["transport"][1])
    for key, (low, high) in _FIELD_RANGES.items():
        value = raw.get(key)
        if value is not None and not low <= value <= high:  # NaN fails both comparisons
            raise _fail(source, name, key, value, _FIELD_TYPES[key][1])
    if "profile" not in raw:
        raise _fail(source, name, "profile", None, _FIELD_TYPES["profile"][1])
    try:
        values = transport_class(transport).validate_fields(name, dict(raw))
    except ConfigError as exc:  # the transport names target and field; add the file
        raise ConfigError(f"{source}: {exc}") from None
    return Target(name=name, source=source, **values)


def _check_runtime_dists(source: str, name: str, dists: dict | None) -> None:
    """Keys are backends, values distribution names (which one a backend accepts is checked where it runs)."""
    for backend, dist in (dists or {}).items():
        if backend not in BACKENDS or not isinstance(dist, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", dist):
            raise _fail(source, name, f"runtime_dists.{backend}", dist,
                        f"a backend in {', '.join(BACKENDS)} mapped to a distribution name (letters, digits, '._-')")


def parse_targets_file(path: Path) -> dict[str, Target]:
    """Read one targets YAML file."""
    source = str(path)
    try:
        data = parse_yaml(read_utf8(path, "targets file"), path)  # a name given twice is an error
    except OSError as exc:
        raise ConfigError(f"cannot read targets file {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict) or set(data) - {"targets"}:
        raise ConfigError(f"{path}: expected a mapping with the single key 'targets', found "
                          f"{sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__}")
    entries = data.get("targets")
    if entries is None:  # every target commented out
        return {}
    if not isinstance(entries, dict):
        raise ConfigError(f"{path}: 'targets' must map target names to fields, found "
                          f"{type(entries).__name__}")
    for name in entries:
        if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
            raise ConfigError(f"{path}: expected target names matching {NAME_PATTERN} (letters, digits, "
                              f"'._-'), found {name!r}; rename it (quote it if YAML reads it as a number)")
    return {name: parse_target(name, raw, source) for name, raw in entries.items()}


def _default_files() -> list[Path]:
    found = sorted(REPO_TARGETS_DIR.glob("*.yaml")) if REPO_TARGETS_DIR.is_dir() else []
    user = USER_TARGETS_FILE.expanduser()
    if user.is_file():
        found.append(user)
    return found


def load_targets(targets_file: str | Path | None = None) -> dict[str, Target]:
    """All known targets by name (``local`` included)."""
    targets = {"local": local_target()}
    if targets_file is not None:
        path = Path(targets_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"targets file {path} does not exist; pass an existing YAML file "
                              "(see targets/example.yaml)")
        files = [path]
    else:
        files = _default_files()
    for path in files:
        for name, target in parse_targets_file(path).items():
            if name in targets and targets[name].source != "<built-in>":
                log.debug("target %s from %s overrides %s", name, path, targets[name].source)
            targets[name] = target
    return targets


def get_target(name: str, targets_file: str | Path | None = None) -> Target:
    """The target called ``name``; a ConfigError listing the known names otherwise."""
    targets = load_targets(targets_file)
    if name not in targets:
        where = str(targets_file) if targets_file else "targets/*.yaml and ~/.config/edge/targets.yaml"
        raise ConfigError(f"unknown target '{name}' in {where}; known targets: "
                          f"{', '.join(sorted(targets))} (run `edge targets list`)")
    return targets[name]


def resolve_ssh(target: Target, ssh_config_file: str | Path | None = None) -> Target:
    """Fill host/user/port/identity_file/known_hosts from ~/.ssh/config and defaults.

    Values set in the target win over ``~/.ssh/config``; ``HostName`` replaces an alias.
    """
    import paramiko

    host, port, user, identity = target.host, target.port, target.user, target.identity_file
    cfg_path = Path(ssh_config_file or SSH_CONFIG_FILE).expanduser()
    if cfg_path.is_file():
        entry = paramiko.SSHConfig.from_path(str(cfg_path)).lookup(target.host or "")
        host = entry.get("hostname", host)
        port = port or (int(entry["port"]) if "port" in entry else None)
        user = user or entry.get("user")
        if identity is None and entry.get("identityfile"):
            identity = entry["identityfile"][0]
    return replace(target, host=host, port=port or 22, user=user or getpass.getuser(),
                   identity_file=str(Path(identity).expanduser()) if identity else None,
                   known_hosts=str(Path(target.known_hosts or DEFAULT_KNOWN_HOSTS).expanduser()))
