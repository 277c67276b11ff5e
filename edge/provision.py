"""Provisioning a device from the host (``edge targets setup``): its runtimes, with no internet there.

1. Ask the device (over its transport, with the target's ``python``) for its architecture,
   Python version and C library.
2. On the **host**, resolve each backend's runtime wheels for that platform with
   ``pip download --only-binary=:all: --platform ... --python-version ...`` into a host-side
   wheel cache (``$EDGE_WHEEL_CACHE``, else ``~/.cache/edge/wheels/<machine>-cp<XY>-<libc>``).
   The cache is tried first with ``--no-index``; only what it lacks is downloaded, and with
   ``offline=True`` nothing is (tests run on a cache filled at install time).
3. Push the wheels the device lacks to ``<workdir>/wheels/`` and unpack them into
   ``<workdir>/venv`` with :mod:`edge.runner.install_wheels` (the device needs no pip), then
   delete the pushed wheels. A second run pushes and installs nothing.

The runner adds ``<workdir>/venv``'s site-packages to its path when it exists (so a target's
``python`` may stay the system interpreter), and ``edge targets check`` probes it.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from .errors import ProvisionError
from .targets import Target, get_target
from .transports import connect
from .transports.base import Transport, tail

log = logging.getLogger(__name__)

VENV_NAME = "venv"  # <workdir>/venv; edge/runner/runner.py and devices.py use the same name
RUNNER_DEPS = ("numpy",)  # the runner reads inputs with numpy, whatever the runtime
INSTALLER_PATH = Path(__file__).resolve().parent / "runner" / "install_wheels.py"
PIP_TIMEOUT_S = 900.0
_PROBE_PY = ("import json, os, platform, sys\n"
             "libc = os.confstr('CS_GNU_LIBC_VERSION') if hasattr(os, 'confstr') else None\n"
             "print(json.dumps({'machine': platform.machine(), 'python': '%d.%d' % sys.version_info[:2],\n"
             "                  'implementation': sys.implementation.name, 'libc': libc}))\n")


def cache_root() -> Path:
    """The host-side wheel cache: $EDGE_WHEEL_CACHE, else ~/.cache/edge/wheels."""
    return Path(os.environ.get("EDGE_WHEEL_CACHE") or "~/.cache/edge/wheels").expanduser()


def parse_probe(stdout: str, where: str) -> dict:
    """The device probe's JSON line, checked; ProvisionError when it is not one."""
    lines = stdout.strip().splitlines()
    try:
        info = json.loads(lines[-1]) if lines else None
    except ValueError:
        info = None
    if not isinstance(info, dict) or not {"machine", "python", "implementation", "libc"} <= set(info):
        raise ProvisionError(f"{where}: expected one JSON line describing the device's Python, found "
                             f"{tail(stdout, 200)!r}; check the target's `python`")
    return info


def probe_python(python_argv: list[str]) -> dict:
    """Probe an interpreter on this machine (the lab's emulated device, the wheel-cache filler)."""
    res = subprocess.run([*python_argv, "-c", _PROBE_PY], capture_output=True, text=True, timeout=300)
    return parse_probe(res.stdout, " ".join(python_argv))


def probe_device(tr: Transport) -> dict:
    """Architecture, Python X.Y, implementation and C library of the target's ``python``."""
    res = tr.run([tr.target.python, "-c", _PROBE_PY], timeout_s=300, check=False)
    if res.exit_code != 0:
        raise ProvisionError(f"{tr.target.name}: `{tr.target.python}` did not run (exit {res.exit_code}): "
                             f"{tail(res.stderr, 300)}; install python3 on the device or set the "
                             "target's `python`")
    return parse_probe(res.stdout, tr.target.name)


def platform_tags(info: dict) -> list[str]:
    """pip ``--platform`` tags a glibc Linux device accepts, newest first."""
    machine, libc = info["machine"], info.get("libc") or ""
    m = re.fullmatch(r"glibc (\d+)\.(\d+)", libc)
    if info["implementation"] != "cpython" or not m or m[1] != "2":
        raise ProvisionError(f"expected CPython on glibc Linux to provision wheels, found "
                             f"{info['implementation']} with C library {libc or 'unknown'} on {machine}; "
                             "devices without glibc (Android) run the runtimes' native tools instead")
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(int(m[2]), 16, -1)]
    tags.append(f"manylinux2014_{machine}")
    if machine in ("x86_64", "i686"):
        tags += [f"manylinux2010_{machine}", f"manylinux1_{machine}"]
    return tags + [f"linux_{machine}"]


def requirements(backend: str, dist: str | None = None) -> list[str]:
    """Distributions a device needs to run ``backend``: ``dist`` (the one the target names in
    ``runtime_dists``), else the backend's first runtime distribution, and the runner's."""
    from .backends import get_backend

    allowed = get_backend(backend).runtime_dists
    if not allowed:
        raise ProvisionError(f"backend {backend} names no runtime distribution to install")
    if dist is not None and dist not in allowed:
        raise ProvisionError(f"the target's runtime_dists.{backend} is {dist!r}; expected one of {', '.join(allowed)}")
    return [dist or allowed[0], *RUNNER_DEPS]


def cache_dir(info: dict) -> Path:
    libc = (info.get("libc") or "nolibc").replace(" ", "")
    return cache_root() / f"{info['machine']}-cp{info['python'].replace('.', '')}-{libc}"


def _pip_download(reqs: list[str], info: dict, dest: Path, offline: bool) -> subprocess.CompletedProcess:
    py = info["python"]
    argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
            "--python-version", py, "--implementation", "cp", "--abi", f"cp{py.replace('.', '')}",
            "--abi", "abi3", "--abi", "none", "-d", str(dest)]
    for tag in platform_tags(info):
        argv += ["--platform", tag]
    if offline:
        argv += ["--no-index", "--find-links", str(dest)]
    return subprocess.run(argv + reqs, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)


def _wheels_in(stdout: str) -> list[Path]:
    """The wheel files pip resolved: its ``Saved`` / ``File was already downloaded`` lines."""
    found = re.findall(r"^\s*(?:Saved|File was already downloaded) (\S+\.whl)\s*$", stdout, re.M)
    return [Path(p).resolve() for p in dict.fromkeys(found)]


def fetch_wheels(backend: str, info: dict, offline: bool = False, dist: str | None = None) -> list[Path]:
    """The wheels ``backend`` (from ``dist``, see :func:`requirements`) needs on a device like
    ``info``, from the host cache (downloaded into it unless ``offline``). ProvisionError says which
    wheel is missing and pip's reason (a distribution that only builds from source has none: it is
    installed on the device itself)."""
    reqs, dest = requirements(backend, dist), cache_dir(info)
    dest.mkdir(parents=True, exist_ok=True)
    res = _pip_download(reqs, info, dest, offline=True)
    if res.returncode != 0 and not offline:
        log.info("downloading %s wheels for %s cp%s into %s", backend, info["machine"], info["python"], dest)
        res = _pip_download(reqs, info, dest, offline=False)
    wheels = _wheels_in(res.stdout)
    if res.returncode != 0 or not wheels:
        errors = [line for line in res.stderr.splitlines() if line.startswith("ERROR")] or [tail(res.stderr, 300)]
        how = ("the host wheel cache lacks them (offline; fill it with `edge targets setup` online, or "
               "`scripts/arm-device wheels` for the lab's device)" if offline
               else "the package index has no matching wheels")
        raise ProvisionError(f"{backend} for {info['machine']} CPython {info['python']} ({info['libc']}): "
                             f"{' '.join(reqs)}: {how}: {' '.join(errors)[-400:]}")
    return wheels


def _venv(tgt: Target) -> str:
    return f"{tgt.workdir.rstrip('/')}/{VENV_NAME}"


def _install(tr: Transport, remote_wheels: list[str]) -> dict:
    """Run the device-side installer; its JSON line."""
    res = tr.run([tr.target.python, "-c", INSTALLER_PATH.read_text(), _venv(tr.target),
                  json.dumps(remote_wheels)], timeout_s=600 + 120 * len(remote_wheels), check=False)
    lines = res.stdout.strip().splitlines()
    try:
        if res.exit_code != 0:
            raise ValueError
        return json.loads(lines[-1])
    except (ValueError, IndexError):
        raise ProvisionError(f"{tr.target.name}: installing into {_venv(tr.target)} failed (exit "
                             f"{res.exit_code}): {tail(res.stderr, 400)}") from None


def _dist_key(wheel: Path) -> tuple[str, str]:
    name, version = wheel.name.split("-")[:2]
    return name.lower(), version


def setup_target(target, backends: list[str], targets_file=None, trust_new_host: bool = False,
                 offline: bool = False) -> dict:
    """Make ``target`` ready to bench ``backends``: see the module docstring. Returns what was done:
    device platform, venv path, wheels installed (name, version, bytes), distributions already
    present, backends unavailable (with pip's reason), bytes pushed and the venv's size."""
    tgt = target if isinstance(target, Target) else get_target(target, targets_file)
    with connect(tgt, trust_new_host) as tr:
        info = probe_device(tr)
        present = _install(tr, [])["present"]
        wheels: dict[tuple[str, str], Path] = {}
        unavailable: dict[str, str] = {}
        for backend in backends:
            try:
                wheels.update({_dist_key(w): w for w in fetch_wheels(backend, info, offline,
                                                                     tgt.runtime_dists.get(backend))})
            except ProvisionError as exc:
                unavailable[backend] = str(exc)
        needed = {k: w for k, w in wheels.items() if present.get(k[0]) != k[1]}
        remote_dir = f"{tgt.workdir.rstrip('/')}/wheels"
        pushed, remote = 0, []
        for wheel in needed.values():
            res = tr.put(wheel, f"{remote_dir}/{wheel.name}")
            pushed += res.bytes_sent
            remote.append(res.remote_path)
        done = _install(tr, remote) if remote else {"installed": [], "present": present}
        if remote:
            tr.run(["rm", "-f", *remote], timeout_s=60, check=False)
        du = tr.run(["du", "-sk", _venv(tgt)], timeout_s=120, check=False).stdout.split()
    if not wheels and unavailable:
        raise ProvisionError("; ".join(unavailable.values()))
    return {"target": tgt.name, "machine": info["machine"], "python": info["python"], "libc": info["libc"],
            "venv": _venv(tgt), "installed": done["installed"],
            "already_present": sorted(f"{k[0]} {k[1]}" for k in wheels if k not in needed),
            "unavailable": unavailable, "bytes_pushed": pushed,
            "bytes_installed": sum(i["bytes"] for i in done["installed"]),
            "venv_mb": round(int(du[0]) / 1024, 1) if du and du[0].isdigit() else None}
