"""Compute peaks of a CPU from what it reports: cores, clock, SIMD width and FMA units.

The arithmetic is the one in the Raspberry Pi 5 profile's note (its 153.6 GFLOPS,
``device_profiles/raspberry-pi-5-8gb.yaml``): ``fp32 GFLOPS = cores x GHz x fp32 lanes per vector x 2 (a fused multiply-add
is two FLOPs) x FMA units per core``. Every input comes from ``/proc/cpuinfo`` (and the sysfs
maximum frequency where cpuinfo gives no clock):

- SIMD width from the ISA flags: ``avx512f`` 512 bits, ``avx``/``avx2`` 256, ``sse``/``asimd``
  (NEON) 128; SVE's vector length is not in cpuinfo, so SVE counts as 128 bits (every shipped
  phone core implements 128-bit SVE).
- FMA units: x86 with ``fma`` issues two FMAs per cycle (Haswell and later, Zen 2+); without it one
  multiply and one add (counted as one FMA unit). Arm cores with dot product (``asimddp``,
  Armv8.2 big cores: A76, A78, X-series) have two 128-bit NEON pipes, older ones (A53, A72) one.
- int8: ``avx512_vnni``/``avx_vnni`` (VPDPBUSD) and Arm ``asimddp``/``i8mm`` (SDOT/SMMLA) do 4
  int8 multiply-adds per fp32 lane; without them int8 goes through 16-bit widening, 2x fp32.
  AMX is left out: the runtimes edge exports for (XNNPACK, the lite interpreter) do not use it.
- fp16: Arm cores with ``asimdhp`` do 8 fp16 lanes per 128 bits (2x fp32); on x86 the runtimes
  compute fp16 models in fp32, so no fp16 peak is given.

These are peaks, not what a runtime reaches (the backend's ``efficiency`` trait scales them)
and not what one thread reaches (the peak counts every core). `edge profiles calibrate`
measures the achieved numbers; these keep an uncalibrated host profile in the right order of
magnitude.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Memory bandwidth is not in /proc/cpuinfo: what one core streams from DRAM, assumed per arch
# (x86 DDR4/DDR5 desktops and servers: 10-20 GB/s per core; Arm boards: Pi 5 memcpy 4.8 GB/s,
# the raspberry-pi-5-8gb profile's bandwidth note)
ASSUMED_BANDWIDTH_GBS = {"x86_64": 10.0, "aarch64": 4.8, "armv7l": 2.0}
CPUINFO = Path("/proc/cpuinfo")
MAX_FREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")  # kHz


@dataclass(frozen=True)
class HostPeaks:
    """Peaks derived from one CPU description, with the inputs shown in ``note``."""

    cores: int
    clock_ghz: float | None
    simd_bits: int
    fma_units: int
    int8_per_fp32: float  # int8 ops per fp32 FLOP per cycle
    fp16: bool  # fp16 arithmetic at twice the fp32 lanes
    clock_source: str = ""

    @property
    def fp32_gflops(self) -> float | None:
        if self.clock_ghz is None:
            return None
        return self.cores * self.clock_ghz * (self.simd_bits // 32) * 2 * self.fma_units

    @property
    def int8_gops(self) -> float | None:
        fp32 = self.fp32_gflops
        return None if fp32 is None else fp32 * self.int8_per_fp32

    @property
    def fp16_gflops(self) -> float | None:
        fp32 = self.fp32_gflops
        return None if fp32 is None or not self.fp16 else 2.0 * fp32

    def note(self, what: str) -> str:
        lanes = self.simd_bits // 32
        base = (f"derived from /proc/cpuinfo: {self.cores} cores x {self.clock_ghz:g} GHz "
                f"({self.clock_source}) x {lanes} fp32 lanes ({self.simd_bits}-bit SIMD) x 2 (FMA) x "
                f"{self.fma_units} FMA unit(s) = {self.fp32_gflops:.4g} GFLOPS")
        if what == "int8":
            return f"{base}; int8 = {self.int8_per_fp32:g}x fp32 ({self._int8_why()})"
        if what == "fp16":
            return f"{base}; fp16 = 2x fp32 (asimdhp: 8 fp16 lanes per 128 bits)"
        return base

    def _int8_why(self) -> str:
        return "4 int8 MACs per fp32 lane: VNNI / SDOT" if self.int8_per_fp32 >= 4 else \
            "16-bit widening, no VNNI / SDOT"


def cpuinfo_flags(cpuinfo: str) -> set[str]:
    """The words of the first ``flags`` (x86) or ``Features`` (Arm) line."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def cpuinfo_clock_ghz(cpuinfo: str, max_freq_khz: int | None = None) -> tuple[float | None, str]:
    """(clock in GHz, where it came from): the model name's ``@ x.xxGHz``, else the sysfs maximum,
    else cpuinfo's ``cpu MHz`` (the current clock; in a VM, the host's nominal one)."""
    for line in cpuinfo.splitlines():
        if line.lower().startswith("model name"):
            m = re.search(r"@\s*([0-9.]+)\s*GHz", line)
            if m:
                return float(m.group(1)), "model name"
            break
    if max_freq_khz:
        return round(max_freq_khz / 1e6, 3), "cpuinfo_max_freq"
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "cpu mhz":
            try:
                return round(float(value) / 1e3, 3), "cpu MHz"
            except ValueError:
                break
    return None, "not reported"


def derive_peaks(cpuinfo: str, arch: str, cores: int, max_freq_khz: int | None = None) -> HostPeaks:
    """Peaks of ``cores`` cores of the CPU ``cpuinfo`` (the text of /proc/cpuinfo) describes."""
    flags = cpuinfo_flags(cpuinfo)
    clock, source = cpuinfo_clock_ghz(cpuinfo, max_freq_khz)
    if arch == "x86_64":
        simd = 512 if "avx512f" in flags else 256 if flags & {"avx", "avx2"} else 128
        units = 2 if "fma" in flags else 1
        int8 = 4.0 if flags & {"avx512_vnni", "avx_vnni"} else 2.0
        fp16 = False
    else:  # aarch64 / armv7l: NEON (asimd) or SVE, 128 bits
        simd = 128
        dot = "asimddp" in flags or "i8mm" in flags
        units = 2 if dot else 1
        int8 = 4.0 if dot else 2.0
        fp16 = "asimdhp" in flags
    return HostPeaks(max(1, int(cores)), clock, simd, units, int8, fp16, source)


def _read_max_freq_khz() -> int | None:
    try:
        return int(MAX_FREQ.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _peak(value: float | None, note: str, missing: str) -> dict:
    if value is None:
        return {"value": None, "kind": None, "note": missing}
    return {"value": float(f"{value:.4g}"), "kind": "derived", "note": note}


def host_peak_fields(cpuinfo: str, arch: str, cores: int, max_freq_khz: int | None = None) -> dict:
    """Values for a profile's ``auto`` clock and compute fields ("section.key" -> value)."""
    p = derive_peaks(cpuinfo, arch, cores, max_freq_khz)
    missing = ("the CPU reports no clock (no '@ GHz' in the model name, no cpufreq, no 'cpu MHz'); "
               "run `edge profiles calibrate --target local`")
    no_fp16 = ("no fp16 arithmetic in the runtimes on this CPU (fp16 models compute in fp32)"
               if arch == "x86_64" else "cpu.isa has no fp16 arithmetic (asimdhp)")
    return {
        "cpu.max_clock_ghz": p.clock_ghz,
        "memory.bandwidth_gbs": ASSUMED_BANDWIDTH_GBS.get(arch),
        "compute.fp32_gflops": _peak(p.fp32_gflops, p.note("fp32") if p.clock_ghz else "", missing),
        "compute.int8_gops": _peak(p.int8_gops, p.note("int8") if p.clock_ghz else "", missing),
        "compute.fp16_gflops": _peak(p.fp16_gflops, p.note("fp16") if p.fp16 and p.clock_ghz else "",
                                     missing if p.fp16 else no_fp16),
    }


def probe_host_peaks(arch: str, cores: int) -> dict:
    """:func:`host_peak_fields` for this machine (reads /proc/cpuinfo and sysfs)."""
    text = CPUINFO.read_text() if CPUINFO.is_file() else ""
    return host_peak_fields(text, arch, cores, _read_max_freq_khz())
