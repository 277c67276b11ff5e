"""CLI plumbing: --json, --help, errors without tracebacks, exit codes."""
import json
import subprocess
import sys

import pytest

from edge.cli import build_parser, main


def test_models_list_json(capsys):
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= {"tiny-mlp", "tiny-cnn", "tiny-lm", "minilm"}


def test_global_json_flag_position(capsys):
    assert main(["--json", "models", "list"]) == 0
    assert json.loads(capsys.readouterr().out)


def _leaf_commands(parser, prefix=()):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _leaf_commands(sub, prefix + (name,))
            return
    yield prefix


def test_every_subcommand_has_help_and_json():
    parser = build_parser()
    leaves = list(_leaf_commands(parser))
    assert ("models", "list") in leaves
    for leaf in leaves:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([*leaf, "--help"])
        assert exit_.value.code == 0
        sub = parser
        for name in leaf:
            sub = next(a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction").choices[name]
        assert any("--json" in a.option_strings for a in sub._actions), leaf


def test_console_script_and_module_entry_points():
    out = subprocess.run([sys.executable, "-m", "edge", "models", "list"], capture_output=True, text=True)
    assert out.returncode == 0 and "tiny-cnn" in out.stdout


def test_edge_error_is_one_line_without_traceback():
    out = subprocess.run(
        [sys.executable, "-m", "edge", "models", "show", "no-such-model"],
        capture_output=True, text=True,
    )
    assert out.returncode == 3, out.stderr
    assert "Traceback" not in out.stderr
    assert "expected a zoo name" in out.stderr


def test_models_show_describes_inputs(capsys):
    assert main(["models", "show", "tiny-cnn", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["inputs"][0]["shape"] == [1, 3, 32, 32] and info["metric"] == "top1"


def test_json_error_output(capsys):
    assert main(["models", "show", "nope", "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["type"] == "ModelLoadError"
