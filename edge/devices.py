"""What a device has: probing its arch, cores, RAM, disk and runtimes, and whether that
matches its device profile (``edge targets check``); the run context of a device without
Python (``device_context``, used when ``edge bench`` runs a runtime's native tool).

Only commands through a :mod:`edge.transports` transport; nothing here knows how the device
is reached.
"""
from __future__ import annotations

import json
import logging

from .errors import ConfigError, TransportError
from .provision import VENV_NAME
from .targets import Target, get_target
from .transports import connect
from .transports.base import Transport

log = logging.getLogger(__name__)

_CONTEXT_SCRIPT = (
    'uname -n; uname -r; uname -m; (nproc 2>/dev/null || echo); '
    'cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo; '
    'cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq 2>/dev/null || echo; '
    'cat /sys/class/thermal/thermal_zone0/temp 2>/dev/null || echo'
)


def device_context(tr: Transport) -> dict:
    """Run context from a device without Python (same keys as the runner's)."""
    out = tr.run(["sh", "-c", _CONTEXT_SCRIPT], timeout_s=30, check=False).stdout.splitlines()
    out += [""] * (7 - len(out))

    def num(s: str):
        return int(s) if s.strip().isdigit() else None

    temp = num(out[6])
    return {"hostname": out[0] or None, "kernel": out[1] or None, "machine": out[2] or None,
            "python": None, "cpu_count": num(out[3]), "cpu_governor": out[4] or None,
            "cpu_freq_khz": num(out[5]), "temp_c_before": temp / 1000 if temp else None,
            "temp_c_after": None}


# What an Android user checks first, on any device that has it: model and SoC (getprop),
# every thermal zone (type and millidegrees), the CPU governor. One "key=value" per line.
_FACTS_SCRIPT = (
    'if command -v getprop >/dev/null 2>&1; then echo "model=$(getprop ro.product.model)"; '
    'echo "board=$(getprop ro.board.platform)"; echo "soc=$(getprop ro.soc.model)"; fi; '
    'echo "governor=$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null)"; '
    'for z in /sys/class/thermal/thermal_zone*; do [ -r "$z/temp" ] || continue; '
    'echo "zone=$(cat "$z/type" 2>/dev/null | tr -d "= ")=$(cat "$z/temp" 2>/dev/null)"; done'
)
_FACT_KEYS = {"model": "product_model", "board": "board_platform", "soc": "soc_model",
              "governor": "cpu_governor"}


def device_facts(tr: Transport) -> dict:
    """Device facts read through the transport: ``product_model``, ``board_platform``,
    ``soc_model`` (Android's getprop), ``cpu_governor`` and ``thermal_c`` (zone type -> degrees C).
    What the device does not have is None (an empty mapping for thermal zones)."""
    try:
        out = tr.run(["sh", "-c", _FACTS_SCRIPT], timeout_s=30, check=False).stdout
    except TransportError as exc:  # facts are context: a device that cannot say is no failure
        log.info("%s: no device facts: %s", tr.target.name, exc)
        out = ""
    facts: dict = {key: None for key in _FACT_KEYS.values()}
    facts["thermal_c"] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key == "zone":
            zone, _, milli = value.rpartition("=")
            if milli.strip().lstrip("-").isdigit():
                facts["thermal_c"][zone or f"zone{len(facts['thermal_c'])}"] = int(milli) / 1000
        elif key in _FACT_KEYS and value.strip():
            facts[_FACT_KEYS[key]] = value.strip()
    return facts


_PROBE_SHELL = (
    'uname -m; (nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo); '
    'grep MemTotal /proc/meminfo | tr -s " " | cut -d" " -f2; '
    'mkdir -p "$1" && df -Pk "$1" | tail -1 | tr -s " " | cut -d" " -f4; '
    'p=$(grep ":memory:" /proc/self/cgroup 2>/dev/null | cut -d: -f3); '
    'cat "/sys/fs/cgroup/memory$p/memory.limit_in_bytes" 2>/dev/null || echo'
)
# Finds the runtimes without importing them (importing TensorFlow alone takes seconds);
# argv[1] is a JSON list of [module, distribution] pairs from the backend registry; argv[2] the
# venv `edge targets setup` provisions (edge.provision.VENV_NAME in the workdir), looked at first.
_PROBE_PY = (
    "import json, os, site, sys, importlib.util\n"
    "from importlib.metadata import version, PackageNotFoundError\n"
    "venv = sys.argv[2] + '/lib/python%d.%d/site-packages' % sys.version_info[:2] if len(sys.argv) > 2 else ''\n"
    "if venv and os.path.isdir(venv):\n"
    "    site.addsitedir(venv)\n"
    "    sys.path.remove(venv)\n"
    "    sys.path.insert(0, venv)\n"
    "import platform\n"
    "print(platform.machine())\n"
    "out = {}\n"
    "for mod, dist in json.loads(sys.argv[1]):\n"
    "    if importlib.util.find_spec(mod) is None:\n"
    "        continue\n"
    "    try:\n"
    "        out[mod] = version(dist)\n"
    "    except PackageNotFoundError:\n"
    "        out[mod] = 'unknown'\n"
    "print(json.dumps(out))\n"
)


def runtime_modules() -> list[list[str]]:
    """Every registered backend's runtime modules as [module, distribution] pairs, once each."""
    from .backends import BACKENDS, get_backend

    pairs = [list(p) for b in BACKENDS for p in get_backend(b).runtime_modules]
    return [p for i, p in enumerate(pairs) if p not in pairs[:i]]


def check_target(target, targets_file=None, trust_new_host: bool = False) -> dict:
    """Connect and report arch, cores, RAM, free disk, runtimes, and the profile match."""
    tgt = target if isinstance(target, Target) else get_target(target, targets_file)
    with connect(tgt, trust_new_host) as tr:
        lines = tr.run(["sh", "-c", _PROBE_SHELL, "sh", tgt.workdir], timeout_s=60).stdout.splitlines()
        lines += [""] * (5 - len(lines))
        py = tr.run([tgt.python, "-c", _PROBE_PY, json.dumps(runtime_modules()),
                     f"{tgt.workdir.rstrip('/')}/{VENV_NAME}"], timeout_s=120, check=False)
    runtimes = _probe_runtimes(py.stdout) if py.exit_code == 0 else {}
    # the interpreter's architecture is the one its runtimes are built for (an emulated device's
    # shell reports the host's); the probe prints it on the line before the runtimes
    py_lines = py.stdout.strip().splitlines() if py.exit_code == 0 else []
    arch = py_lines[-2].strip() if len(py_lines) >= 2 and py_lines[-2].strip().isidentifier() else None
    num = lambda s: int(s) if s.strip().isdigit() else None  # noqa: E731
    limit = num(lines[4])
    device = {"arch": arch or lines[0].strip() or None, "cores": num(lines[1]),
              "ram_mb": num(lines[2]) // 1024 if num(lines[2]) else None,
              "free_disk_mb": num(lines[3]) // 1024 if num(lines[3]) else None,
              "memory_limit_mb": limit // (1 << 20) if limit and limit < (1 << 50) else None,
              "python": tgt.python if py.exit_code == 0 else None, "runtimes": runtimes}
    return {"target": tgt.name, "transport": tgt.transport, "profile": tgt.profile,
            "device": device, **profile_match(tgt.profile, device)}


def _probe_runtimes(stdout: str) -> dict:
    """The probe's last line as {module: version}; anything else (a banner, garbage) means none found."""
    lines = stdout.strip().splitlines()
    try:
        found = json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {str(k): str(v) for k, v in found.items()}


def profile_match(profile_name: str, device: dict) -> dict:
    """Compare what the device reports with its profile (arch, cores, RAM within 20 %)."""
    from .profiles import load_profile

    try:
        profile = load_profile(profile_name)
    except ConfigError as exc:
        return {"profile_matches": False, "mismatches": [f"profile not loadable: {exc}"]}
    mismatches = []
    if device["arch"] and profile.arch != device["arch"]:
        mismatches.append(f"arch: profile {profile.arch}, device {device['arch']}")
    if profile.cpu.cores and device["cores"] and profile.cpu.cores != device["cores"]:
        mismatches.append(f"cores: profile {profile.cpu.cores}, device {device['cores']}")
    total, ram = profile.memory.total_mb, device["ram_mb"]
    if total and ram and not 0.8 * total <= ram <= 1.05 * total:
        mismatches.append(f"RAM: profile {total} MB, device {ram} MB")
    missing = [r for r in profile.runtimes if not _has_runtime(r, device["runtimes"])]
    if device["python"] and missing:
        mismatches.append(f"runtimes the profile lists but the device cannot import: {', '.join(missing)}")
    return {"profile_matches": not mismatches, "mismatches": mismatches}


def _has_runtime(runtime: str, importable: dict) -> bool:
    """Can the device import any of the modules the backend's runtime comes in?"""
    from .backends import get_backend

    return any(module in importable for module, _dist in get_backend(runtime).runtime_modules)
