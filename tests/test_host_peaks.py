"""Host compute peaks derived from fixed /proc/cpuinfo texts (no machine is read)."""
from __future__ import annotations

import pytest

from edge.host_peaks import derive_peaks, host_peak_fields

XEON = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\ncpu MHz\t\t: 2600.000\n"
        "flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512_vnni amx_tile\n")
DESKTOP = ("processor\t: 0\nmodel name\t: Intel(R) Core(TM) i7-4790 CPU @ 3.60GHz\ncpu MHz\t\t: 800.000\n"
           "flags\t\t: fpu sse sse2 fma sse4_2 avx avx2\n")
PI5 = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm fphp asimdhp cpuid asimdrdm asimddp\n"
PI4 = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"


def test_avx512_server_core_count_clock_width_and_two_fma_units():
    p = derive_peaks(XEON, "x86_64", cores=2)
    assert (p.simd_bits, p.fma_units, p.clock_ghz, p.clock_source) == (512, 2, 2.6, "cpu MHz")
    assert p.fp32_gflops == pytest.approx(2 * 2.6 * 16 * 2 * 2)  # 332.8
    assert p.int8_gops == pytest.approx(4 * 332.8)  # VNNI
    assert p.fp16_gflops is None  # the runtimes compute fp16 in fp32 on x86


def test_avx2_desktop_takes_the_model_name_clock_not_the_current_one():
    p = derive_peaks(DESKTOP, "x86_64", cores=4)
    assert (p.clock_ghz, p.simd_bits) == (3.6, 256)
    assert p.fp32_gflops == pytest.approx(4 * 3.6 * 8 * 2 * 2)
    assert p.int8_gops == pytest.approx(2 * p.fp32_gflops)  # no VNNI: widening


def test_pi5_matches_the_reference_arithmetic():
    p = derive_peaks(PI5, "aarch64", cores=4, max_freq_khz=2_400_000)
    assert p.fp32_gflops == pytest.approx(153.6)  # the Pi 5 profile's fp32_gflops arithmetic
    assert p.fp16_gflops == pytest.approx(307.2) and p.int8_gops == pytest.approx(614.4)
    pi4 = derive_peaks(PI4, "aarch64", cores=4, max_freq_khz=1_800_000)
    assert pi4.fp32_gflops == pytest.approx(4 * 1.8 * 4 * 2 * 1) and pi4.fp16_gflops is None


def test_profile_fields_say_how_they_were_derived_or_why_not():
    fields = host_peak_fields(XEON, "x86_64", 2)
    fp32 = fields["compute.fp32_gflops"]
    assert fp32["value"] == 332.8 and fp32["kind"] == "derived"
    assert "2 cores x 2.6 GHz" in fp32["note"] and "512-bit" in fp32["note"]
    assert fields["cpu.max_clock_ghz"] == 2.6 and fields["memory.bandwidth_gbs"] > 0
    no_clock = host_peak_fields(PI4, "aarch64", 4)  # Arm cpuinfo has no clock, no sysfs given
    assert no_clock["compute.fp32_gflops"] == {"value": None, "kind": None, "note": pytest.approx(
        no_clock["compute.fp32_gflops"]["note"])}
    assert "no clock" in no_clock["compute.fp32_gflops"]["note"]
