"""Device profiles: what one class of device offers a model.

A profile is one YAML file, ``<name>.yaml``, in the repository's ``device_profiles/`` or in
``~/.config/edge/profiles/`` (a user file overrides a shipped one of the same name). Its
keys are the fields of :class:`DeviceProfile` and its parts (``raspberry-pi-5-8gb.yaml``
shows each); any other key is an error. Compute figures are :class:`Peak` values marked
``measured`` or ``derived`` (arithmetic on cited inputs, shown in the note), or null with a
note saying why; ``sources`` cites the inputs. ``memory.model_budget_mb`` (RAM one model
process may use) and ``storage.budget_mb`` (disk for its artifacts) are policies explained
in each profile. ``calibration`` is free-form data measured on the device. Fields listed
in :data:`AUTO_FIELDS` may be ``auto``: they are probed on the machine loading the profile
(``local-x86_64`` describes the host so). Problems are :class:`~edge.errors.ConfigError`
naming the file, the field path, the value and what is allowed.
"""
from __future__ import annotations

import logging
import os
import platform
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable

from .backends import BACKENDS
from .errors import ConfigError
from .fileio import read_yaml_file

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "device_profiles"
USER_DIR = Path("~/.config/edge/profiles")
RUNTIMES = tuple(BACKENDS)  # a profile's runtimes are backend names
TRANSPORTS = ("ssh", "adb", "local")
OSES = ("linux", "android", "macos")
PEAK_KINDS = ("measured", "derived")
ISA_BY_ARCH: dict[str, tuple[str, ...]] = {
    "aarch64": ("neon", "fp16", "fhm", "dotprod", "i8mm", "bf16", "sve", "sve2", "sme"),
    "armv7l": ("neon", "fp16"),
    "x86_64": ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512", "avx512_vnni", "avx512_bf16",
               "avx_vnni", "amx"),
}
# /proc/cpuinfo "Features" (Arm) / "flags" (x86) word -> ISA name used in profiles
CPUINFO_FLAGS = {
    "asimd": "neon", "neon": "neon", "asimdhp": "fp16", "asimdfhm": "fhm", "asimddp": "dotprod",
    "i8mm": "i8mm", "bf16": "bf16", "sve": "sve", "sve2": "sve2", "sme": "sme",
    "sse4_2": "sse4_2", "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c",
    "avx512f": "avx512", "avx512_vnni": "avx512_vnni", "avx512_bf16": "avx512_bf16",
    "avx_vnni": "avx_vnni", "amx_tile": "amx",
}
AUTO = "auto"
AUTO_FIELDS = ("cpu.model", "cpu.cores", "cpu.isa", "memory.total_mb", "memory.model_budget_mb",
               "storage.budget_mb", "cpu.max_clock_ghz", "memory.bandwidth_gbs", "compute.fp32_gflops", "compute.fp16_gflops",
               "compute.int8_gops")  # clock and peaks: edge.host_peaks
AUTO_BUDGET_SHARE = 0.5  # model_budget_mb: auto = this share of total RAM

Check = Callable[[Any, str, str], Any]  # (value, field path, source file) -> value


# --- field checks ----------------------------------------------------------------------

def _fail(source: str, where: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{source}: {where or '(top level)'}: expected {expected}; found {value!r}")


def _text(nullable: bool = False, allowed: tuple[str, ...] | None = None,
          pattern: str | None = None) -> Check:
    def check(value: Any, where: str, source: str) -> Any:
        if value is None and nullable:
            return None
        null = " or null" if nullable else ""
        if allowed is not None and value not in allowed:
            raise _fail(source, where, value, "one of " + ", ".join(allowed) + null)
        if isinstance(value, str) and (not pattern or re.fullmatch(pattern, value)):
            return value
        matching = f" matching {pattern}" if pattern else ""
        raise _fail(source, where, value, f"a string{matching}{null}")
    return check


# No field of a device profile is meaningfully this large (1e9 MB of RAM, 1e9 GFLOPS ...):
# a bigger value is a typo or a unit mix-up, and NaN/inf would make every prediction meaningless.
ABSURD = 1e9


def _number(kind: type, unit: str = "", maximum: float | None = None) -> Check:
    """A positive, finite int or float (ints accepted for floats) up to ``maximum``, or null."""
    expected = ("an integer" if kind is int else "a number") + (f" in {unit}" if unit else "") \
        + f" > 0 and <= {maximum if maximum is not None else ABSURD:g}, or null"

    def check(value: Any, where: str, source: str) -> Any:
        if value is None:
            return None
        types = (int,) if kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, types) \
                or not 0 < value <= (maximum if maximum is not None else ABSURD):  # NaN, inf, 10**400 fail
            raise _fail(source, where, value, expected)
        return kind(value)
    return check


def _texts(allowed: tuple[str, ...] | None = None) -> Check:
    def check(value: Any, where: str, source: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _fail(source, where, value, "a list of strings")
        for item in value:
            if allowed is not None and item not in allowed:
                raise _fail(source, where, item, "each item one of " + ", ".join(allowed))
        if len(set(value)) != len(value):
            raise _fail(source, where, value, "a list without duplicates")
        return tuple(value)
    return check


def _mapping(value: Any, where: str, source: str) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return None if value is None else dict(value)
    raise _fail(source, where, value, "a mapping with string keys, or null")


def _flag(value: Any, where: str, source: str) -> bool:
    if isinstance(value, bool):
        return value
    raise _fail(source, where, value, "true or false")


def _f(check: Check | type, default: Any = MISSING, **kwargs: Any) -> Any:
    """A dataclass field carrying its YAML check (or the dataclass of a nested section)."""
    return field(default=default, metadata={"check": check}, **kwargs)


# --- the schema ------------------------------------------------------------------------

@dataclass(frozen=True)
class Peak:
    """A throughput figure with its provenance; ``value`` None means unknown (``note`` says why)."""

    value: float | None = _f(_number(float))
    kind: str | None = _f(_text(nullable=True, allowed=PEAK_KINDS))  # None iff value is None
    note: str = _f(_text(), "")


@dataclass(frozen=True)
class CPU:
    model: str = _f(_text())
    cores: int | None = _f(_number(int, maximum=1024))
    max_clock_ghz: float | None = _f(_number(float, "GHz (not MHz)", maximum=10))
    isa: tuple[str, ...] = _f(_texts())  # names from ISA_BY_ARCH[arch]
    note: str = _f(_text(), "")


@dataclass(frozen=True)
class Memory:
    total_mb: int | None = _f(_number(int, "MB"))
    model_budget_mb: int | None = _f(_number(int, "MB"))  # RAM one model process may use
    budget_note: str = _f(_text())  # how the budget was chosen
    bandwidth_gbs: float | None = _f(_number(float, "GB/s"))  # effective, as a model sees it
    bandwidth_note: str = _f(_text())  # which measurement and why
    dram: str | None = _f(_text(nullable=True), None)


@dataclass(frozen=True)
class Storage:
    budget_mb: int | None = _f(_number(int, "MB"))
    note: str = _f(_text(), "")


@dataclass(frozen=True)
class Compute:
    fp32_gflops: Peak = _f(Peak)
    fp16_gflops: Peak = _f(Peak)
    int8_gops: Peak = _f(Peak)
    fp64_hpl_gflops: Peak = _f(Peak)  # sustained HPL (LINPACK), context for the peaks


@dataclass(frozen=True)
class DeviceProfile:
    """One device class. Build it with :func:`load_profile` or :meth:`from_dict`."""

    name: str = _f(_text(pattern=r"[a-z0-9][a-z0-9._-]*"))
    description: str = _f(_text())
    arch: str = _f(_text(allowed=tuple(ISA_BY_ARCH)))
    os: str = _f(_text(allowed=OSES))
    transport: str = _f(_text(allowed=TRANSPORTS))
    runtimes: tuple[str, ...] = _f(_texts(RUNTIMES))
    cpu: CPU = _f(CPU)
    memory: Memory = _f(Memory)
    storage: Storage = _f(Storage)
    compute: Compute = _f(Compute)
    accelerators: tuple[str, ...] = _f(_texts(), ())
    sources: tuple[str, ...] = _f(_texts(), ())
    notes: str = _f(_text(), "")
    calibration: dict[str, Any] | None = _f(_mapping, None, hash=False)
    emulated: bool = _f(_flag, False)  # runs under an emulator (qemu-user): timings are not the CPU's
    path: Path | None = field(default=None, compare=False)  # the file it came from

    def __post_init__(self) -> None:
        _check_consistency(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>", path: Path | None = None,
                  host: Mapping[str, Any] | None = None) -> DeviceProfile:
        """Validate plain data (as read from YAML). ``host`` gives values for ``auto`` fields
        (default: :func:`probe_host`)."""
        if isinstance(data, dict):
            data = _resolve_auto(data, source, host)
        return _build(cls, data, "", source, path=path)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts, scalars) that :meth:`from_dict` turns into an equal profile."""
        return _plain(self)

    @property
    def source(self) -> str:  # what error messages name
        return str(self.path) if self.path else f"profile '{self.name}'"


def _build(cls: type, raw: Any, where: str, source: str, **extra: Any) -> Any:
    """Check ``raw`` against the fields of dataclass ``cls`` and construct it."""
    specs = {f.name: f for f in fields(cls) if "check" in f.metadata}
    if not isinstance(raw, dict):
        raise _fail(source, where, raw, "a mapping with the keys " + ", ".join(specs))
    for key, value in raw.items():
        if key not in specs:
            raise ConfigError(f"{source}: {f'{where}.{key}' if where else key}: unknown key "
                              f"(value {value!r}); allowed keys here: {', '.join(specs)}")
    values = {}
    for name, spec in specs.items():
        path = f"{where}.{name}" if where else name
        check = spec.metadata["check"]
        if name in raw:
            values[name] = (_build(check, raw[name], path, source) if isinstance(check, type)
                            else check(raw[name], path, source))
        elif spec.default is MISSING:
            raise ConfigError(f"{source}: {path}: required field is missing "
                              f"(expected keys here: {', '.join(specs)})")
    return cls(**values, **extra)


def _check_consistency(p: DeviceProfile) -> None:
    """Cross-field rules; raises ConfigError naming the profile's file and the field."""
    src, mem = p.source, p.memory
    for feature in p.cpu.isa:
        if feature not in ISA_BY_ARCH[p.arch]:
            raise _fail(src, "cpu.isa", feature, f"an ISA feature of {p.arch}: "
                        + ", ".join(ISA_BY_ARCH[p.arch]))
    if mem.total_mb and mem.model_budget_mb and mem.model_budget_mb > mem.total_mb:
        raise _fail(src, "memory.model_budget_mb", mem.model_budget_mb,
                    f"at most memory.total_mb ({mem.total_mb})")
    for where, value, note in (("memory.model_budget_mb", mem.model_budget_mb, mem.budget_note),
                               ("memory.bandwidth_gbs", mem.bandwidth_gbs, mem.bandwidth_note),
                               ("storage.budget_mb", p.storage.budget_mb, p.storage.note)):
        if value is None and not note.strip():
            raise _fail(src, where, value, "a value, or a note next to it saying why it is unknown")
    if (p.transport == "adb") != (p.os == "android"):
        raise _fail(src, "transport", p.transport,
                    f"adb for os android and only there (os is {p.os})")
    if not p.runtimes:
        raise _fail(src, "runtimes", [], "at least one of " + ", ".join(RUNTIMES))
    for f in fields(Compute):
        _check_peak(src, f"compute.{f.name}", getattr(p.compute, f.name))
    if p.arch == "aarch64" and p.compute.fp16_gflops.value and "fp16" not in p.cpu.isa:
        raise _fail(src, "compute.fp16_gflops.value", p.compute.fp16_gflops.value,
                    "null, since cpu.isa has no fp16 arithmetic")


def _check_peak(src: str, where: str, peak: Peak) -> None:
    if (peak.value is None) != (peak.kind is None):
        raise _fail(src, f"{where}.kind", peak.kind, "null when value is null, else one of "
                    + ", ".join(PEAK_KINDS))
    if (peak.value is None or peak.kind == "derived") and not peak.note.strip():
        why = "why the value is unknown" if peak.value is None else "the arithmetic and its inputs"
        raise _fail(src, f"{where}.note", peak.note, f"a note giving {why}")


# --- auto fields: the host edge runs on -------------------------------------------------

def isa_from_cpuinfo(cpuinfo: str, arch: str) -> tuple[str, ...]:
    """ISA names (as used in profiles) found in the text of /proc/cpuinfo, for ``arch``."""
    words: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            words.update(value.split())
    found = {CPUINFO_FLAGS[w] for w in words if w in CPUINFO_FLAGS}
    return tuple(f for f in ISA_BY_ARCH.get(arch, ()) if f in found)


def probe_host(arch: str) -> dict[str, Any]:
    """Values for :data:`AUTO_FIELDS` ("section.key" -> value), read from this machine."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.partition(":")[2].strip() for line in cpuinfo.splitlines()
                  if line.lower().startswith("model name")), "")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    from .host_peaks import probe_host_peaks

    return {"cpu.model": model or platform.processor() or platform.machine(), "cpu.cores": cores,
            "cpu.isa": list(isa_from_cpuinfo(cpuinfo, arch)), "memory.total_mb": total_mb,
            "memory.model_budget_mb": int(total_mb * AUTO_BUDGET_SHARE),
            "storage.budget_mb": total_mb, **probe_host_peaks(arch, cores or 1)}


def _resolve_auto(data: dict, source: str, host: Mapping[str, Any] | None) -> dict:
    """A copy of ``data`` with ``auto`` fields replaced by host values."""
    wanted = [dotted for dotted in AUTO_FIELDS
              if isinstance(section := data.get(dotted.split(".")[0]), dict)
              and section.get(dotted.split(".")[1]) == AUTO]
    if not wanted:
        return data
    values = dict(host) if host is not None else probe_host(str(data.get("arch")))
    total = data["memory"].get("total_mb") if isinstance(data.get("memory"), dict) else None
    if isinstance(total, int) and not isinstance(total, bool):  # explicit RAM: shares of it
        values["memory.model_budget_mb"] = int(total * AUTO_BUDGET_SHARE)
        values["storage.budget_mb"] = total
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for dotted in wanted:
        section, key = dotted.split(".")
        if dotted not in values:  # a given host that does not say: unknown
            values[dotted] = None if section in ("cpu", "memory") else {
                "value": None, "kind": None, "note": "not derived: the host values given had none"}
        out[section][key] = values[dotted]
    log.debug("%s: probed %s", source, ", ".join(wanted))
    return out


# --- files -----------------------------------------------------------------------------

def read_yaml(path: Path) -> Any:
    """Parse a device profile file; errors become ConfigError naming the file (and line)."""
    return read_yaml_file(path, "device profile")


def profile_dirs() -> list[Path]:
    """Where names are looked up; a later directory overrides an earlier one."""
    return [SHIPPED_DIR, USER_DIR.expanduser()]


def profile_files() -> dict[str, Path]:
    """Profile name -> file, over :func:`profile_dirs`, sorted by name."""
    found: dict[str, Path] = {}
    for directory in profile_dirs():
        if directory.is_dir():
            for path in sorted(directory.iterdir()):
                if path.suffix in (".yaml", ".yml") and path.is_file():
                    found[path.stem] = path
    return dict(sorted(found.items()))


def _load_file(path: Path, expect_name: str | None) -> DeviceProfile:
    profile = DeviceProfile.from_dict(read_yaml(path), source=str(path), path=path)
    if expect_name is not None and profile.name != expect_name:
        raise _fail(str(path), "name", profile.name,
                    f"'{expect_name}' (the file name without .yaml), so lookups by name find it")
    return profile


def load_profile(name_or_path: str | os.PathLike) -> DeviceProfile:
    """Load a profile by name (see :func:`profile_dirs`) or from a path to a YAML file."""
    ref = os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike) or "/" in ref or ref.endswith((".yaml", ".yml")):
        path = Path(ref).expanduser()
        if not path.is_file():
            raise ConfigError(f"device profile file {path} does not exist; expected a path to a "
                              f"profile .yaml or one of the names {', '.join(profile_files())}")
        return _load_file(path, expect_name=None)
    files = profile_files()
    if ref not in files:
        raise ConfigError(
            f"unknown device profile '{ref}'; available: {', '.join(files) or '(none)'}. "
            f"Pass a path to a .yaml file, or add {USER_DIR / (ref + '.yaml')}")
    return _load_file(files[ref], expect_name=ref)


def list_profiles() -> list[DeviceProfile]:
    """Every profile that :func:`load_profile` finds by name, sorted by name."""
    return [_load_file(path, expect_name=name) for name, path in profile_files().items()]


def _plain(obj: Any) -> Any:
    if is_dataclass(obj):
        out = {f.name: _plain(getattr(obj, f.name)) for f in fields(obj) if f.name != "path"}
        if isinstance(obj, DeviceProfile) and obj.calibration is None:
            del out["calibration"]
        return out
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj
