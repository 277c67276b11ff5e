"""`edge models`: the zoo and model references."""
from __future__ import annotations

import argparse

from .common import Output, command, render_table


# --- models ---------------------------------------------------------------------------

def _models_list(args: argparse.Namespace) -> Output:
    from ..models import list_models

    rows = list_models()
    return Output(rows, render_table(rows, ["name", "description"]))


def _models_show(args: argparse.Namespace) -> Output:
    from ..models import load_model

    info = load_model(args.model).summary()
    lines = [f"{k}: {v}" for k, v in info.items() if k != "inputs"]
    lines += [f"input {i['name']}: {i['shape']} {i['dtype']}" for i in info["inputs"]]
    return Output(info, "\n".join(lines))


def add_models(sub) -> None:
    p = sub.add_parser("models", help="the model zoo")
    s = p.add_subparsers(dest="models_command", required=True)
    command(s, "list", _models_list, "list the zoo models")
    show = command(s, "show", _models_show,
                    "load a model (zoo name, file.py:factory or HF dir) and describe it")
    show.add_argument("model", help="zoo name, path/to/file.py:factory, or a Hugging Face model directory")
