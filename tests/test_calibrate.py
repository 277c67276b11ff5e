"""Calibration: probes exported and timed on the real `local` target, the calibration block,
the written profile, the planner reading it, and the errors."""
from __future__ import annotations

import datetime
import json

import pytest
import yaml

from edge import __version__
from edge.benchmark import BenchResult
from edge.calibrate import (PROBE_NAMES, Probe, ProbeResult, calibrate, compare_figures,
                            default_probes, derive_calibration, parse_cache_mb, probes_by_backend,
                            save_calibrated_profile)
from edge.cli import main
from edge.compress import Int8DynamicConfig
from edge.errors import ConfigError
from edge.calibrate_fit import SCALE_BOUNDS
from edge.planner.cost import TERMS, device_rates
from edge.profiles import DeviceProfile, load_profile

BACKENDS = ["torchscript", "executorch"]
# Small versions of the default probes (the same code path, seconds to export); `dispatch` and
# `conv_small` run in the CLI test, which uses the default probes.
DISPATCH = Probe("dispatch", rows=1, width_in=4, width_out=4, layers=8, iterations=20)
INT8_SMALL = Probe("matmul_int8_small", rows=8, width_in=64, width_out=64, layers=4, iterations=10,
                   recipe=(Int8DynamicConfig().to_dict(),), tag="int8")
SMALL_PROBES = [
    Probe("overhead", rows=1, width_in=4, width_out=4, layers=1, iterations=20),
    Probe("matmul_fp32", rows=32, width_in=256, width_out=256, layers=2, iterations=10),
    Probe("matmul_fp32_small", rows=8, width_in=64, width_out=64, layers=4, iterations=10),
    Probe("matmul_int8", rows=32, width_in=256, width_out=256, layers=2, iterations=10,
          recipe=(Int8DynamicConfig().to_dict(),), tag="int8"),
    Probe("elementwise", rows=16, width_in=256, width_out=256, layers=4, iterations=10, kind="elementwise"),
    Probe("conv", rows=8, width_in=16, width_out=16, layers=2, iterations=10, kind="conv"),
    Probe("bandwidth", rows=1, width_in=1024, width_out=1024, layers=1, iterations=10),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory, request):
    """A throwaway HOME (no real ~/.config is read or written) and a persistent export cache."""
    home = tmp_path_factory.mktemp("home")
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    exports = cache.mkdir("edge-calibrate-exports") if cache else tmp_path_factory.mktemp("exports")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("EDGE_CACHE_DIR", str(exports))
        yield home


ROUNDS_SEEN: list[tuple[int, int]] = []  # (round, probe results recorded by then), from between_rounds


@pytest.fixture(scope="module")
def calibration(env):
    # two repeats exercise the rounds; the spread is recorded, never refused (a shared host's noise)
    import edge.calibrate

    timed = []
    real_bench = edge.benchmark.bench

    def counting_bench(*a, **kw):
        timed.append(1)
        return real_bench(*a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(edge.benchmark, "bench", counting_bench)
        return edge.calibrate.calibrate("local", backends=BACKENDS, probes=SMALL_PROBES, repeats=2, max_spread=None,
                                        between_rounds=lambda r: ROUNDS_SEEN.append((r, len(timed))))


def test_between_rounds_runs_after_each_round_of_the_probes(calibration):
    # a benchmark's own cases go there: after every probe of round 0, before any of round 1
    per_round = ROUNDS_SEEN[1][1] // 2
    assert ROUNDS_SEEN == [(0, per_round), (1, 2 * per_round)] and per_round >= len(SMALL_PROBES)


def test_calibration_has_positive_numbers_per_backend(calibration):
    block = calibration.block
    assert calibration.backends == BACKENDS and not calibration.failures
    assert block["schema_version"] == 1
    for backend in BACKENDS:
        assert block["matmul_gops"][backend]["fp32"] > 0
        assert block["matmul_gops"][backend]["int8"] > 0
        assert block["overhead_ms"][backend] > 0
        assert block["bandwidth_gbs_by_backend"][backend] > 0
        assert block["memory_gbs"][backend] > 0 and block["conv_gops"][backend] > 0
        assert block["matmul_fixed_ms"].get(backend, {}).get("fp32", 0.0) >= 0
    assert block["bandwidth_gbs"] > 0
    assert block["cache_mb"] > 0  # read from sysfs on local
    # The runner reports its own peak RSS, so the runtime's memory is measured on local too.
    for backend in BACKENDS:
        assert 10 < block["runtime_memory_mb"][backend] < 4096


def test_provenance_names_target_date_versions_and_raw_p50s(calibration):
    prov = calibration.block["provenance"]
    assert prov["target"] == "local" and prov["transport"] == "local"
    assert prov["edge_version"] == __version__
    assert datetime.datetime.fromisoformat(prov["measured_at"]).tzinfo is not None
    assert prov["runtime_versions"]["executorch"].startswith("executorch 1.")
    assert "torch" in prov["runtime_versions"]["torchscript"]
    assert "threads" in prov and prov["statistic"] == "median over repeats of p50"
    assert calibration.block["repeats"] == 2 and set(calibration.block["spread"]) == set(BACKENDS)
    assert all(calibration.block["probe_error"][b] >= 0 for b in BACKENDS)
    for backend in BACKENDS:
        assert set(prov["probes"][backend]) == {p.name for p in SMALL_PROBES} <= set(PROBE_NAMES)
        for record in prov["probes"][backend].values():
            assert record["p50_ms"] > 0 and record["samples"] > 0 and len(record["artifact_sha256"]) == 64
            assert len(record["p50s_ms"]) == 2 and record["spread"] >= 0 and record["predicted_ms"] > 0
        assert prov["probes"][backend]["matmul_int8"]["recipe"] == ["int8_dynamic"]


def test_throughputs_follow_from_the_raw_p50s(calibration):
    block = calibration.block
    for backend in BACKENDS:
        probes = block["provenance"]["probes"][backend]
        overhead = probes["overhead"]["p50_ms"]
        assert block["overhead_ms"][backend] == overhead
        fp32 = probes["matmul_fp32"]
        fixed_ms = block.get("matmul_fixed_ms", {}).get(backend, {}).get("fp32", 0.0)
        net_ms = max(fp32["p50_ms"] - overhead - 2 * fixed_ms, 0.05 * fp32["p50_ms"])
        # p50s and the fixed cost are stored to 4 significant digits: compare to 1%
        assert block["matmul_gops"][backend]["fp32"] == pytest.approx(fp32["flops"] / net_ms / 1e6, rel=1e-2)


def test_written_profile_loads_round_trips_and_keeps_auto_fields(calibration, tmp_path):
    path = save_calibrated_profile(calibration.profile, calibration.block, tmp_path / "cal.yaml")
    profile = load_profile(path)
    assert profile.name == "local-x86_64" and profile.calibration == calibration.block
    assert DeviceProfile.from_dict(profile.to_dict()) == profile
    raw = yaml.safe_load(path.read_text())
    assert raw["cpu"]["cores"] == "auto"  # still probed wherever the file is loaded
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_default_destination_overrides_the_shipped_profile(calibration, env):
    path = save_calibrated_profile(calibration.profile, calibration.block)
    assert path == env / ".config" / "edge" / "profiles" / "local-x86_64.yaml"
    assert load_profile("local-x86_64").calibration == calibration.block
    path.unlink()
    assert load_profile("local-x86_64").calibration is None


def test_the_cost_model_uses_the_calibration(calibration, tmp_path):
    profile = load_profile(save_calibrated_profile(calibration.profile, calibration.block,
                                                   tmp_path / "cal.yaml"))
    block = calibration.block
    for backend in BACKENDS:
        rates = device_rates(profile, backend)
        assert rates.gops["fp32"] == block["matmul_gops"][backend]["fp32"]
        assert rates.gops["int8"] == block["matmul_gops"][backend]["int8"]
        assert rates.overhead_ms == block["overhead_ms"][backend]
        assert rates.bandwidth_gbs == block["bandwidth_gbs"]
    rows = compare_figures(calibration.profile, block)
    fp32 = next(r for r in rows if r["backend"] == "executorch" and r["figure"] == "fp32_gops")
    assert fp32["measured"] == block["matmul_gops"]["executorch"]["fp32"]
    assert fp32["before"] == device_rates(calibration.profile, "executorch").gops["fp32"]


def test_derivation_subtracts_the_overhead():
    def result(name: str, p50_ms: float) -> ProbeResult:
        probe = next(p for p in SMALL_PROBES + [DISPATCH, INT8_SMALL] if p.name == name)
        bench = BenchResult("executorch", "dev", "0" * 64, 1, "executorch", "1.5.1", None,
                            {"p50": p50_ms}, [p50_ms], 1.0, 1.0, 300.0)
        return ProbeResult("executorch", probe, bench)

    # a fixed 0.49 ms, 0.01 ms per op: the one-op overhead probe takes 0.5 ms
    block = derive_calibration({"executorch": [
        result("overhead", 0.5), result("dispatch", 0.5 + 7 * 0.01), result("matmul_fp32", 2.51),
        result("bandwidth", 1.5), result("elementwise", 0.49 + 8 * 0.01 + 0.25),
        result("conv", 0.49 + 4 * 0.01 + 0.1)]})
    assert block["per_op_overhead_ms"] == {"executorch": pytest.approx(0.01)}
    assert "matmul_fixed_ms" not in block  # no small matmul probe: no fixed cost
    flops = 2 * 32 * 256 * 256 * 2  # over 2.51 - 0.49 - 2 layers x 0.01 = 2 ms
    assert block["matmul_gops"]["executorch"]["fp32"] == pytest.approx(flops / 2e-3 / 1e9, rel=1e-3)
    bytes_read = 1024 * 1024 * 4 + (1024 + 1024) * 4  # over 1.5 - 0.49 - 0.01 = 1 ms
    assert block["bandwidth_gbs"] == pytest.approx(bytes_read / 1e-3 / 1e9, rel=1e-3)
    elementwise = 8 * (2 * 16 + 1) * 256 * 4  # 8 ops, each reads x and a row and writes x
    assert block["memory_gbs"]["executorch"] == pytest.approx(elementwise / 0.25e-3 / 1e9, rel=1e-3)
    conv_flops = 2 * 16 * 8 * 8 * (9 + 16) * 2  # over 0.1 ms
    assert block["conv_gops"]["executorch"] == pytest.approx(conv_flops / 0.1e-3 / 1e9, rel=1e-3)
    assert block["overhead_ms"] == {"executorch": pytest.approx(0.49)}
    assert block["runtime_memory_mb"] == {"executorch": 300.0}


def test_small_and_big_matmuls_give_a_fixed_cost_per_call_and_a_throughput():
    def result(probe: Probe, p50_ms: float) -> ProbeResult:
        bench = BenchResult("torchscript", "dev", "0" * 64, 1, "torchscript", "2", None,
                            {"p50": p50_ms}, [p50_ms], 1.0, 1.0, 300.0)
        return ProbeResult("torchscript", probe, bench)

    big, small = (next(p for p in SMALL_PROBES if p.name == n) for n in ("matmul_fp32", "matmul_fp32_small"))
    gflops_per_ms, fixed_ms = 10.0 * 1e6, 0.02  # each layer: 0.02 ms + flops at 10 GFLOPS
    layer_ms = {p.name: fixed_ms + p.flops / p.layers / gflops_per_ms for p in (big, small)}
    block = derive_calibration({"torchscript": [
        result(SMALL_PROBES[0], 0.1), result(big, 0.1 + 2 * layer_ms[big.name]),
        result(small, 0.1 + 4 * layer_ms[small.name])]})
    assert block["matmul_fixed_ms"]["torchscript"]["fp32"] == pytest.approx(fixed_ms, rel=1e-3)
    assert block["matmul_gops"]["torchscript"]["fp32"] == pytest.approx(10.0, rel=1e-3)
    assert block["fixed_cost_from"] == {"matmul_flops": 2.0 * 8 * 64 * 64}  # per call of the small probe


def test_cache_size_is_the_largest_sysfs_cache():
    assert parse_cache_mb("32K\n32K\n1024K\n32768K\n") == 32.0
    assert parse_cache_mb("512K\n2M\n") == 2.0
    assert parse_cache_mb("") is None


def test_tflite_skips_the_bandwidth_probe_only_beside_another_backend():
    both = probes_by_backend(["executorch", "tflite"])
    assert [p.name for p in both["executorch"]] == [p.name for p in default_probes()]
    assert not {"bandwidth", "matmul_fp32_deep"} & {p.name for p in both["tflite"]}
    assert {"dispatch", "matmul_fp32_wide", "activation"} <= {p.name for p in both["tflite"]}
    assert "bandwidth" in [p.name for p in probes_by_backend(["tflite"])["tflite"]]
    with pytest.raises(ConfigError, match="including 'overhead'"):
        probes_by_backend(["executorch"], SMALL_PROBES[1:])
    with pytest.raises(ConfigError, match="probe kinds from linear, elementwise, activation, transcendental, pool"):
        probes_by_backend(["executorch"], [SMALL_PROBES[0], Probe("conv", 1, 1, 1, 1, 1, kind="lstm")])


def test_unknown_target_is_a_config_error(env):
    with pytest.raises(ConfigError, match="unknown target 'no-such-device'.*known targets: .*local"):
        calibrate("no-such-device")


def test_unknown_and_unsupported_backends_are_config_errors(env, tmp_path):
    with pytest.raises(ConfigError, match="unknown backend 'coreml'; expected one of torchscript"):
        calibrate("local", backends=["coreml"])
    targets = tmp_path / "targets.yaml"
    targets.write_text(yaml.safe_dump({"targets": {"phone": {"transport": "local", "profile": "pixel-8-pro"}}}))
    with pytest.raises(ConfigError, match="'torchscript' is not a runtime of profile pixel-8-pro "
                                          r"\(executorch, tflite\)"):
        calibrate("phone", backends=["torchscript"], targets_file=targets)
    with pytest.raises(ConfigError, match="threads >= 1"):
        calibrate("local", threads=0)


def test_cli_errors_exit_2_with_the_reason(env, capsys):
    assert main(["profiles", "calibrate", "--target", "nowhere", "--json"]) == 2
    assert "unknown target 'nowhere'" in json.loads(capsys.readouterr().out)["error"]
    assert main(["profiles", "calibrate", "--target", "local", "--backends", "tflite,bogus"]) == 2
    assert "unknown backend 'bogus'" in capsys.readouterr().err
    # llama.cpp runs language models only: without --llm there is nothing to time on it
    assert main(["profiles", "calibrate", "--target", "local", "--backends", "llamacpp"]) == 2
    assert "pass --llm" in capsys.readouterr().err


def test_cli_calibrates_and_prints_before_and_measured(env, tmp_path, capsys):
    out = tmp_path / "local.yaml"
    assert main(["profiles", "calibrate", "--target", "local", "--backends", "torchscript",
                 "--repeats", "1", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "before" in text and "measured" in text and f"wrote {out}" in text
    assert "spread of 1 repeats" in text and "cost model error on the probes" in text
    assert "term scales (fitted to the composite probes), torchscript" in text
    profile = load_profile(out)
    assert profile.calibration["matmul_gops"]["torchscript"]["fp32"] > 0
    assert list(profile.calibration["overhead_ms"]) == ["torchscript"]
    assert profile.calibration["per_op_overhead_ms"]["torchscript"] >= 0
    assert profile.calibration["memory_gbs"]["torchscript"] > 0
    assert len(profile.calibration["matmul_curve"]["torchscript"]["fp32"]) == 4  # tiny, small, big, wide
    cal = profile.calibration
    assert cal["transcendental_gbs"]["torchscript"] > 0 and cal["pool_gbs"]["torchscript"] > 0
    assert cal["effective_cache_mb"] > 0  # from the deep matmul probe
    assert profile.calibration["conv_fixed_ms"]["torchscript"] >= 0
    assert set(profile.calibration["fixed_cost_from"]) == {"matmul_flops", "conv_flops"}
    probes = profile.calibration["provenance"]["probes"]["torchscript"]
    assert set(probes) == {p.name for p in default_probes()}
    # the composite probes' timings fitted a scale per latency term, within the fit's bounds
    scales = cal["term_scale"]["torchscript"]
    assert set(scales) == set(TERMS) and all(SCALE_BOUNDS[0] - 1e-3 <= v <= SCALE_BOUNDS[1] for v in scales.values())
    assert not (env / ".config" / "edge" / "profiles" / "local-x86_64.yaml").exists()
