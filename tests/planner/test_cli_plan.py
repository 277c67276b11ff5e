"""`edge plan`: JSON and text output, -o writes a loadable plan, no plan -> exit code 6."""
from __future__ import annotations

import json

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


def test_edge_plan_text_shows_predictions_pareto_and_reasons(capsys):
    assert main(["plan", "tiny-mlp", "--profile", "raspberry-pi-zero-2w"]) == 0
    text = capsys.readouterr().out
    for needle in ("predicted: size", "Pareto front", "latency_ms", "reasons:", "rejected"):
        assert needle in text


def test_edge_plan_infeasible_exits_6(capsys):
    code = main(["plan", "tiny-mlp", "--profile", "raspberry-pi-zero-2w", "--max-size-mb", "0.001"])
    assert code == 6
    assert "best reachable size" in capsys.readouterr().err
