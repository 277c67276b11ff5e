"""`edge plan`: JSON and text output, -o writes a loadable plan, no plan -> exit code 6."""
from __future__ import annotations

import json
import re

import pytest

from edge.cli import main
from edge.planner import load_plan


def test_edge_plan_json_and_output_file(tmp_path, capsys):
    out = tmp_path / "plan.yaml"
    code = main(["plan", "tiny-mlp", "--profile", "raspberry-pi-zero-2w", "--min-accuracy", "0.98",
                 "--backends", "executorch,torchscript", "-o", str(out), "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backend"] in ("executorch", "torchscript") and data["constraints"]["min_accuracy"] == 0.98
    assert load_plan(out).to_dict() == data
    pred = data["predicted"]  # the peak in its two parts: the runtime's own RSS and the model's share
    assert pred["runtime_memory_mb"] > 0 and pred["model_memory_mb"] > 0
    assert pred["peak_memory_mb"] == pytest.approx(pred["runtime_memory_mb"] + pred["model_memory_mb"])


def test_edge_plan_text_shows_predictions_pareto_and_reasons(capsys):
    assert main(["plan", "tiny-mlp", "--profile", "raspberry-pi-zero-2w"]) == 0
    text = capsys.readouterr().out
    for needle in ("predicted: size", "Pareto front", "latency_ms", "reasons:", "rejected"):
        assert needle in text
    assert re.search(r"peak memory ([\d.]+) MB \(runtime ([\d.]+) MB \+ model ([\d.]+) MB\)", text)


def test_a_plan_from_before_the_memory_split_loads_and_renders(tmp_path):
    from edge.cli.export import _render_plan
    from edge.planner import save_plan

    path = tmp_path / "plan.yaml"
    assert main(["plan", "tiny-mlp", "--profile", "raspberry-pi-zero-2w", "--backends", "tflite", "-o", str(path)]) == 0
    plan = load_plan(path)
    for key in ("runtime_memory_mb", "model_memory_mb"):  # as a plan file written before the split
        plan.predicted.pop(key)
    old = load_plan(save_plan(plan, tmp_path / "old.yaml"))
    assert f"peak memory {old.predicted['peak_memory_mb']} MB, latency" in _render_plan(old)


def test_edge_plan_infeasible_exits_6(capsys):
    code = main(["plan", "tiny-mlp", "--profile", "raspberry-pi-zero-2w", "--max-size-mb", "0.001"])
    assert code == 6
    assert "best reachable size" in capsys.readouterr().err
