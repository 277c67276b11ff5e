"""Target inventory: schema validation, defaults, ~/.ssh/config resolution."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edge.errors import ConfigError
from edge.targets import (LOCAL_PROFILE, REPO_TARGETS_DIR, get_target, load_targets,
                          parse_targets_file, resolve_ssh)


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "targets.yaml"
    path.write_text(text)
    return path


def test_local_is_built_in():
    local = load_targets(None)["local"]
    assert (local.transport, local.profile, local.python) == ("local", LOCAL_PROFILE, sys.executable)
    assert Path(local.workdir).is_dir()


def test_ssh_target_fields_and_defaults(tmp_path):
    path = _file(tmp_path, "targets:\n  pi:\n    transport: ssh\n    host: 10.0.0.5\n"
                           "    port: 2200\n    profile: raspberry-pi-5-8gb\n")
    pi = get_target("pi", path)
    assert (pi.host, pi.port, pi.workdir, pi.python, pi.source) == (
        "10.0.0.5", 2200, "edge", "python3", str(path))
    assert set(load_targets(path)) == {"local", "pi"}


@pytest.mark.parametrize("body, field, allowed", [
    ("transport: ssh\n    host: h\n    profile: p\n    colour: red", "colour", "only the fields"),
    ("transport: ssh\n    host: h\n    profile: p\n    port: '22'", "port", "an integer"),
    ("transport: ssh\n    host: h\n    profile: p\n    port: 70000", "port", "1-65535"),
    ("transport: telnet\n    host: h\n    profile: p", "transport", "local, ssh, adb"),
    ("transport: ssh\n    profile: p", "host", "a host"),
    ("transport: adb\n    profile: p", "serial", "a serial"),
    ("transport: ssh\n    host: h", "profile", "profile name"),
    ("transport: local\n    profile: p\n    runtime_dists: [llamacpp]", "runtime_dists", "a mapping of backend"),
    ("transport: local\n    profile: p\n    runtime_dists: {onnxruntime: ort}", "runtime_dists.onnxruntime",
     "a backend in"),
    ("transport: local\n    profile: p\n    runtime_dists: {llamacpp: 3}", "runtime_dists.llamacpp",
     "a distribution name"),
])
def test_bad_fields_name_file_field_value_and_allowed(tmp_path, body, field, allowed):
    path = _file(tmp_path, f"targets:\n  t1:\n    {body}\n")
    with pytest.raises(ConfigError) as err:
        load_targets(path)
    msg = str(err.value)
    assert str(path) in msg and f"'{field}'" in msg and allowed in msg and "t1" in msg


def test_unknown_target_lists_known_ones(tmp_path):
    with pytest.raises(ConfigError, match="known targets: local"):
        get_target("nope", _file(tmp_path, "targets: {}\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_targets(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="single key 'targets'"):
        load_targets(_file(tmp_path, "devices: {}\n"))


def test_ssh_config_alias_user_port_identity(tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host kitchen-pi\n  HostName 192.168.1.77\n  User pi\n  Port 2022\n"
                   "  IdentityFile ~/.ssh/pi_key\n")
    path = _file(tmp_path, "targets:\n  k:\n    transport: ssh\n    host: kitchen-pi\n"
                           "    profile: raspberry-pi-4-4gb\n")
    resolved = resolve_ssh(get_target("k", path), cfg)
    assert (resolved.host, resolved.user, resolved.port) == ("192.168.1.77", "pi", 2022)
    assert resolved.identity_file == str(Path("~/.ssh/pi_key").expanduser())
    assert resolved.known_hosts == str(Path("~/.ssh/known_hosts").expanduser())
    explicit = _file(tmp_path, "targets:\n  k:\n    transport: ssh\n    host: kitchen-pi\n"
                               "    user: root\n    port: 22\n    profile: raspberry-pi-4-4gb\n")
    resolved = resolve_ssh(get_target("k", explicit), cfg)
    assert (resolved.user, resolved.port) == ("root", 22)  # the target file wins


def test_shipped_example_parses():
    assert parse_targets_file(REPO_TARGETS_DIR / "example.yaml") == {}


def test_shipped_example_entries_are_valid_when_uncommented(tmp_path):
    text = (REPO_TARGETS_DIR / "example.yaml").read_text()
    uncommented = "\n".join(line[1:] if line.startswith("#  ") else line for line in text.splitlines())
    targets = parse_targets_file(_file(tmp_path, uncommented))
    assert targets["pi5-desk"].transport == "ssh" and targets["pixel"].transport == "adb"
    assert targets["pixel"].benchmark_model == "~/android/benchmark_model"
    assert targets["pi5-desk"].runtime_dists == {"llamacpp": "llama-cpp-python"} and targets["pixel"].runtime_dists == {}
