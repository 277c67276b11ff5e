"""Device facts read through the transport: getprop (Android), thermal zones, the governor.

Android's `getprop` cannot run here, so one test puts a stand-in `getprop` script first on
PATH (the only fake: the parsing and the transport are real); the bench test reads a real
device's facts.
"""
from __future__ import annotations

import dataclasses
import glob

from edge.benchmark import bench
from edge.devices import device_facts
from edge.targets import local_target
from edge.transports import connect


def test_getprop_and_thermal_zones_are_read_and_missing_values_are_none(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    getprop = bindir / "getprop"
    getprop.write_text('#!/bin/sh\ncase "$1" in ro.product.model) echo "Pixel 8 Pro";; '
                       'ro.board.platform) echo zuma;; *) echo;; esac\n')
    getprop.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{__import__('os').environ['PATH']}")
    with connect(dataclasses.replace(local_target(), workdir=str(tmp_path / "w"))) as tr:
        facts = device_facts(tr)
    assert facts["product_model"] == "Pixel 8 Pro" and facts["board_platform"] == "zuma"
    assert facts["soc_model"] is None  # getprop printed nothing for it
    zones = glob.glob("/sys/class/thermal/thermal_zone*/temp")
    assert len(facts["thermal_c"]) == len(zones)
    assert all(isinstance(v, float) for v in facts["thermal_c"].values())


def test_a_bench_carries_the_device_facts(tiny_artifacts, tmp_path):
    target = dataclasses.replace(local_target(), workdir=str(tmp_path / "device"))
    res = bench(tiny_artifacts["torchscript"], target, warmup=0, iterations=1)
    facts = res.context["device_facts"]
    assert set(facts) == {"product_model", "board_platform", "soc_model", "cpu_governor", "thermal_c"}
    assert facts["product_model"] is None  # no getprop on this Linux host
    assert res.to_dict()["context"]["device_facts"] == facts
