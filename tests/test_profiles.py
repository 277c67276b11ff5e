"""Device profiles: the shipped YAML files, validation errors, lookup, and the CLI."""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge.cli import main
from edge.errors import ConfigError
from edge.profiles import (SHIPPED_DIR, DeviceProfile, isa_from_cpuinfo, list_profiles,
                           load_profile, profile_files)

REQUIRED = {"raspberry-pi-zero-2w", "raspberry-pi-3b-plus", "raspberry-pi-4-4gb",
            "raspberry-pi-5-8gb", "jetson-orin-nano-8gb", "pixel-8-pro", "galaxy-s23",
            "midrange-dimensity-7300", "local-x86_64"}
SHIPPED = sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))
CALIBRATE_HINT = "edge profiles calibrate --target local"


@pytest.fixture(autouse=True)
def _no_user_profiles(tmp_path, monkeypatch):
    """Keep the developer's ~/.config/edge/profiles out of the tests."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def _texts(obj) -> list[str]:
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _texts(v)]
    if isinstance(obj, list):
        return [t for v in obj for t in _texts(v)]
    return [obj] if isinstance(obj, str) else []


# --- shipped profiles -------------------------------------------------------------------

def test_the_required_device_classes_are_shipped():
    assert REQUIRED <= set(SHIPPED)
    assert REQUIRED <= set(profile_files())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_loads_consistently_and_round_trips(name):
    profile = load_profile(name)
    assert profile.name == name and profile.path == SHIPPED_DIR / f"{name}.yaml"
    mem = profile.memory
    if mem.total_mb is not None and mem.model_budget_mb is not None:
        assert 0 < mem.model_budget_mb <= mem.total_mb
    assert mem.budget_note and mem.bandwidth_note
    for peak in dataclasses.astuple(profile.compute, tuple_factory=list):
        value, kind, note = peak
        assert (value is None) == (kind is None) and note
    data = profile.to_dict()
    assert DeviceProfile.from_dict(data) == profile
    assert DeviceProfile.from_dict(yaml.safe_load(yaml.safe_dump(data))) == profile
    assert json.loads(json.dumps(data)) == data
    cited = {tag for text in _texts(data) if text not in data["sources"]
             for tag in re.findall(r"\[S\d+\]", text)}
    listed = {tag for source in data["sources"] for tag in re.findall(r"^\[S\d+\]", source)}
    assert cited <= listed, f"{name}: cited but not in sources: {sorted(cited - listed)}"
    if name != "local-x86_64":
        assert profile.sources and profile.transport in ("ssh", "adb")


def test_pi5_numbers_come_from_the_facts_with_their_provenance():
    p = load_profile("raspberry-pi-5-8gb")
    assert (p.arch, p.cpu.cores, p.cpu.max_clock_ghz) == ("aarch64", 4, 2.4)
    assert p.cpu.isa == ("neon", "fp16", "dotprod")
    assert (p.memory.total_mb, p.memory.model_budget_mb, p.memory.bandwidth_gbs) == (8192, 4096, 9.3)
    assert p.compute.fp32_gflops.value == pytest.approx(2 * 4 * 2 * 4 * 2.4)
    assert p.compute.fp32_gflops.kind == "derived" and "2.4 GHz" in p.compute.fp32_gflops.note
    assert (p.compute.int8_gops.value, p.compute.int8_gops.kind) == (614, "derived")
    assert p.compute.fp64_hpl_gflops.kind == "measured"
    pi4 = load_profile("raspberry-pi-4-4gb")
    assert "fp16" not in pi4.cpu.isa and pi4.compute.fp16_gflops.value is None


def test_unknown_facts_are_null_with_a_reason():
    zero = load_profile("raspberry-pi-zero-2w")
    assert zero.memory.bandwidth_gbs is None and "No measured bandwidth" in zero.memory.bandwidth_note
    pi3 = load_profile("raspberry-pi-3b-plus")
    assert pi3.compute.fp32_gflops.value is None and pi3.compute.fp32_gflops.note
    s23 = load_profile("galaxy-s23")  # phones: RAM from spec sheets, but no HPL measured
    assert s23.compute.fp64_hpl_gflops.value is None and s23.compute.fp64_hpl_gflops.note


def test_local_profile_describes_this_host_and_points_at_calibration():
    p = load_profile("local-x86_64")
    assert p.transport == "local" and p.arch == "x86_64"
    assert p.cpu.cores == len(os.sched_getaffinity(0))
    assert p.memory.total_mb > 0 and p.memory.model_budget_mb == p.memory.total_mb // 2
    assert all(isinstance(f, str) for f in p.cpu.isa)
    # peaks derived from /proc/cpuinfo (edge/host_peaks.py), the arithmetic in the note
    for peak in (p.compute.fp32_gflops, p.compute.int8_gops):
        assert peak.kind == "derived" and peak.value > 0 and "derived from /proc/cpuinfo" in peak.note
    assert p.compute.fp16_gflops.value is None and p.compute.fp16_gflops.note
    assert CALIBRATE_HINT in p.memory.bandwidth_note


def test_auto_fields_take_values_from_the_given_host():
    raw = yaml.safe_load((SHIPPED_DIR / "local-x86_64.yaml").read_text())
    host = {"cpu.model": "Test CPU", "cpu.cores": 3, "cpu.isa": ["avx2", "fma"],
            "memory.total_mb": 1000, "memory.model_budget_mb": 500, "storage.budget_mb": 1000}
    p = DeviceProfile.from_dict(raw, host=host)
    assert (p.cpu.model, p.cpu.cores, p.cpu.isa) == ("Test CPU", 3, ("avx2", "fma"))
    assert (p.memory.total_mb, p.memory.model_budget_mb, p.storage.budget_mb) == (1000, 500, 1000)
    raw["memory"]["total_mb"] = 2048  # explicit RAM: the auto budget is half of it
    assert DeviceProfile.from_dict(raw, host=host).memory.model_budget_mb == 1024


def test_isa_from_cpuinfo_maps_kernel_flags_per_arch():
    pi5 = "processor : 0\nFeatures : fp asimd evtstrm fphp asimdhp cpuid asimdrdm asimddp\n"
    assert isa_from_cpuinfo(pi5, "aarch64") == ("neon", "fp16", "dotprod")
    x86 = "flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni\n"
    assert isa_from_cpuinfo(x86, "x86_64") == ("sse4_2", "avx", "avx2", "fma", "avx512",
                                               "avx512_vnni")
    assert isa_from_cpuinfo(x86, "aarch64") == ()


def test_profiles_are_frozen_and_keep_calibration():
    data = load_profile("raspberry-pi-5-8gb").to_dict()
    data["calibration"] = {"matmul_gflops": {"fp32": 41.5, "int8": 120.0}, "bandwidth_gbs": 8.8}
    p = DeviceProfile.from_dict(data)
    assert p.calibration["matmul_gflops"]["int8"] == 120.0
    assert DeviceProfile.from_dict(p.to_dict()) == p
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "other"  # type: ignore[misc]


# --- lookup -----------------------------------------------------------------------------

def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def test_name_and_path_and_user_directory(tmp_path):
    pi5 = load_profile("raspberry-pi-5-8gb")
    assert load_profile(pi5.path) == pi5 == load_profile(str(pi5.path))
    user_dir = tmp_path / "home" / ".config" / "edge" / "profiles"
    data = pi5.to_dict() | {"name": "my-board", "description": "my own board"}
    _write(user_dir / "my-board.yaml", data)
    mine = load_profile("my-board")
    assert mine.description == "my own board" and mine.path == user_dir / "my-board.yaml"
    assert "my-board" in [p.name for p in list_profiles()]
    override = pi5.to_dict() | {"notes": "overridden"}
    _write(user_dir / "raspberry-pi-5-8gb.yaml", override)
    assert load_profile("raspberry-pi-5-8gb").notes == "overridden"


def test_unknown_name_lists_the_available_profiles():
    with pytest.raises(ConfigError) as err:
        load_profile("raspberry-pi-9")
    assert "'raspberry-pi-9'" in str(err.value) and "raspberry-pi-5-8gb" in str(err.value)
    with pytest.raises(ConfigError, match=r"does not exist.*raspberry-pi-5-8gb"):
        load_profile("no/such/file.yaml")


def test_file_name_must_match_profile_name_for_lookup(tmp_path):
    data = load_profile("raspberry-pi-5-8gb").to_dict() | {"name": "other-name"}
    path = _write(tmp_path / "home/.config/edge/profiles/board.yaml", data)
    with pytest.raises(ConfigError) as err:
        load_profile("board")
    assert str(path) in str(err.value) and "name" in str(err.value) and "other-name" in str(err.value)
    assert load_profile(path).name == "other-name"  # by path, any file name works


# --- validation errors ------------------------------------------------------------------

def _set(data: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        data = data[key]
    if value is _DELETE:
        del data[last]
    else:
        data[last] = value


_DELETE = object()
# (field, bad value, substrings the message must contain besides the file name)
BAD_FIELDS = [
    ("colour", "red", ["colour", "'red'", "allowed keys", "runtimes"]),
    ("cpu.frequency_ghz", 2.4, ["cpu.frequency_ghz", "2.4", "allowed keys", "max_clock_ghz"]),
    ("compute.fp32_gflops.source", "x", ["compute.fp32_gflops.source", "value, kind, note"]),
    ("cpu.cores", "four", ["cpu.cores", "'four'", "an integer"]),
    ("cpu.cores", True, ["cpu.cores", "True", "an integer"]),
    ("cpu.cores", 2.5, ["cpu.cores", "2.5", "an integer"]),
    ("memory.total_mb", -8192, ["memory.total_mb", "-8192", "> 0"]),
    ("storage.budget_mb", 0, ["storage.budget_mb", "0", "> 0"]),
    ("memory.bandwidth_gbs", "fast", ["memory.bandwidth_gbs", "'fast'", "GB/s"]),
    ("cpu.max_clock_ghz", 2400, ["cpu.max_clock_ghz", "2400", "GHz (not MHz)", "<= 10"]),
    ("memory.model_budget_mb", 9000, ["memory.model_budget_mb", "9000", "at most", "8192"]),
    ("runtimes", ["executorch", "onnx"], ["runtimes", "'onnx'", "torchscript, executorch, tflite"]),
    ("runtimes", "executorch", ["runtimes", "'executorch'", "a list of strings"]),
    ("runtimes", [], ["runtimes", "at least one"]),
    ("cpu.isa", ["neon", "avx2"], ["cpu.isa", "'avx2'", "aarch64", "dotprod"]),
    ("cpu.isa", ["neon", "neon"], ["cpu.isa", "duplicates"]),
    ("transport", "telnet", ["transport", "'telnet'", "ssh, adb, local"]),
    ("transport", "adb", ["transport", "'adb'", "android"]),
    ("arch", "riscv64", ["arch", "'riscv64'", "aarch64, armv7l, x86_64"]),
    ("name", "Raspberry Pi", ["name", "'Raspberry Pi'", "matching"]),
    ("memory.total_mb", _DELETE, ["memory.total_mb", "required field is missing"]),
    ("cpu", _DELETE, ["cpu", "required field is missing"]),
    ("memory", [1, 2], ["memory", "[1, 2]", "a mapping", "total_mb"]),
    ("compute.int8_gops.kind", None, ["compute.int8_gops.kind", "None", "measured, derived"]),
    ("compute.int8_gops.kind", "guessed", ["compute.int8_gops.kind", "'guessed'", "measured"]),
    ("compute.int8_gops.note", "", ["compute.int8_gops.note", "arithmetic"]),
    ("compute.fp16_gflops", {"value": None, "kind": None},
     ["compute.fp16_gflops.note", "why the value is unknown"]),
    ("compute.fp16_gflops", {"value": None, "kind": "measured", "note": "n"},
     ["compute.fp16_gflops.kind", "'measured'", "null when value is null"]),
    ("memory.bandwidth_note", "", ["memory.bandwidth_gbs", "note"]),
    ("calibration", [1, 2], ["calibration", "[1, 2]", "a mapping with string keys"]),
    ("calibration", {1: "x"}, ["calibration", "string keys"]),
]


@pytest.mark.parametrize("dotted,value,expected", BAD_FIELDS,
                         ids=[f"{d}={v!r}"[:40] for d, v, _ in BAD_FIELDS])
def test_invalid_field_names_file_field_value_and_allowed(tmp_path, dotted, value, expected):
    data = copy.deepcopy(load_profile("raspberry-pi-5-8gb").to_dict())
    if dotted == "memory.bandwidth_note":
        data["memory"]["bandwidth_gbs"] = None
    if dotted == "cpu.isa" and value == ["neon", "avx2"]:
        data["compute"]["fp16_gflops"] = {"value": None, "kind": None, "note": "n"}
    _set(data, dotted, value)
    path = _write(tmp_path / "bad.yaml", data)
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    message = str(err.value)
    assert message.startswith(str(path)), message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_fp16_peak_without_fp16_arithmetic_is_inconsistent(tmp_path):
    data = load_profile("raspberry-pi-5-8gb").to_dict()
    data["cpu"]["isa"] = ["neon", "dotprod"]
    with pytest.raises(ConfigError, match=r"compute\.fp16_gflops\.value.*no fp16.*307\.2"):
        load_profile(_write(tmp_path / "x.yaml", data))


@pytest.mark.parametrize("text,line,problem", [
    ("name: a\ncpu: [neon\nmemory: {}\n", None, "invalid YAML"),
    ("name: a\ndescription: b\nname: c\n", 3, "duplicate key 'name'"),
    ("name: a\n  description: b\n", 2, "invalid YAML"),
])
def test_invalid_yaml_names_file_and_line(tmp_path, text, line, problem):
    path = _write(tmp_path / "broken.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    line_re = str(line) if line else r"\d+"
    assert re.match(re.escape(str(path)) + f":{line_re}: ", str(err.value)), str(err.value)
    assert problem in str(err.value)


def test_empty_file_is_a_config_error(tmp_path):
    path = _write(tmp_path / "empty.yaml", "")
    with pytest.raises(ConfigError, match=r"empty\.yaml: \(top level\): expected a mapping.*None"):
        load_profile(path)


# --- CLI --------------------------------------------------------------------------------

def test_cli_list_table_and_json(capsys):
    assert main(["profiles", "list"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header == ["name", "cpu", "cores", "ram", "budget", "runtimes"]
    pi5 = next(line for line in out.splitlines() if line.startswith("raspberry-pi-5-8gb"))
    assert "Cortex-A76 @ 2.4 GHz" in pi5 and "8192 MB" in pi5 and "4096 MB" in pi5
    assert main(["profiles", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == sorted(SHIPPED)
    row = next(r for r in rows if r["name"] == "raspberry-pi-5-8gb")
    assert (row["cores"], row["total_mb"], row["model_budget_mb"]) == (4, 8192, 4096)
    assert row["runtimes"] == ["torchscript", "executorch", "tflite", "llamacpp"]


def test_cli_show_text_and_json_by_name_and_path(capsys):
    assert main(["profiles", "show", "raspberry-pi-5-8gb"]) == 0
    text = capsys.readouterr().out
    for part in ("raspberry-pi-5-8gb: Raspberry Pi 5", "isa: neon, fp16, dotprod",
                 "model_budget_mb: 4096", "bandwidth_gbs: 9.3", "fp32_gflops: 153.6 (derived)",
                 "[S43]", "calibration:"):
        assert part in text, part
    assert main(["profiles", "show", "raspberry-pi-zero-2w"]) == 0
    assert "bandwidth_gbs: unknown" in capsys.readouterr().out
    path = str(SHIPPED_DIR / "pixel-8-pro.yaml")
    assert main(["profiles", "show", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == load_profile("pixel-8-pro").to_dict()


def test_cli_errors_exit_2_without_traceback(tmp_path, capsys):
    assert main(["profiles", "show", "no-such-board"]) == 2
    err = capsys.readouterr().err
    assert "unknown device profile 'no-such-board'" in err and "raspberry-pi-5-8gb" in err
    assert "Traceback" not in err
    bad = _write(tmp_path / "bad.yaml", "name: x\ncpu: {cores: [\n")
    assert main(["profiles", "show", str(bad), "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["type"] == "ConfigError"
    assert f"{bad}:" in captured.err and "Traceback" not in captured.err


def test_console_script_lists_profiles():
    edge = Path(sys.executable).with_name("edge")
    proc = subprocess.run([str(edge), "profiles", "list"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    names = {line.split()[0] for line in proc.stdout.splitlines()[2:]}
    assert REQUIRED <= names
