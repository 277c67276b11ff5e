"""The `edge` command line. The only module that prints.

Each command group has one ``_add_<group>(sub)`` function that declares its
subcommands; a handler takes the parsed args and returns an :class:`Output`
(machine-readable ``data`` for ``--json``, human ``text`` otherwise, exit code).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from typing import Any, Callable

from .errors import EdgeError

log = logging.getLogger("edge")


@dataclass
class Output:
    data: Any
    text: str
    exit_code: int = 0


def _common(default: Any) -> argparse.ArgumentParser:
    # Subcommands use SUPPRESS so `edge --json models list` and `edge models list --json` agree.
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", default=default,
                        help="machine-readable result on stdout (logs go to stderr)")
    parent.add_argument("--debug", action="store_true", default=default,
                        help="show tracebacks and debug logs")
    return parent


COMMON = _common(argparse.SUPPRESS)
TOP = _common(False)


def _command(sub, name: str, handler: Callable[[argparse.Namespace], Output], help_: str):
    p = sub.add_parser(name, parents=[COMMON], help=help_, description=help_)
    p.set_defaults(handler=handler)
    return p


def _table(rows: list[dict], columns: list[str]) -> str:
    """Plain fixed-width table; values already formatted as strings or numbers."""
    if not rows:
        return "(none)"
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


# --- models ---------------------------------------------------------------------------

def _models_list(args: argparse.Namespace) -> Output:
    from .models import list_models

    rows = list_models()
    return Output(rows, _table(rows, ["name", "description"]))


def _models_show(args: argparse.Namespace) -> Output:
    from .models import load_model

    info = load_model(args.model).summary()
    lines = [f"{k}: {v}" for k, v in info.items() if k != "inputs"]
    lines += [f"input {i['name']}: {i['shape']} {i['dtype']}" for i in info["inputs"]]
    return Output(info, "\n".join(lines))


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="the model zoo")
    s = p.add_subparsers(dest="models_command", required=True)
    _command(s, "list", _models_list, "list the zoo models")
    show = _command(s, "show", _models_show,
                    "load a model (zoo name, file.py:factory or HF dir) and describe it")
    show.add_argument("model", help="zoo name, path/to/file.py:factory, or a Hugging Face model directory")


# --- profiles -------------------------------------------------------------------------

def _add_profiles(sub) -> None:
    pass


# --- export ---------------------------------------------------------------------------

def _add_export(sub) -> None:
    pass


# --- plan -----------------------------------------------------------------------------

def _add_plan(sub) -> None:
    pass


# --- targets, deploy, bench -----------------------------------------------------------

def _add_devices(sub) -> None:
    pass


# --- compare, results, report ---------------------------------------------------------

def _add_compare(sub) -> None:
    pass


COMMAND_GROUPS = [_add_models, _add_profiles, _add_export, _add_plan, _add_devices, _add_compare]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge", parents=[TOP],
        description="Plan, compress, export, deploy and benchmark PyTorch models on edge devices.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMAND_GROUPS:
        add(sub)
    return parser


def _emit(out: Output, as_json: bool) -> None:
    if as_json:
        print(json.dumps(out.data, indent=2, default=str))
    elif out.text:
        print(out.text)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO if not args.json else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr,
    )
    try:
        out = args.handler(args)
    except EdgeError as exc:
        if debug:
            log.exception("failed")
        if args.json:
            print(json.dumps({"error": str(exc), "type": type(exc).__name__, "exit_code": exc.exit_code}))
        print(f"edge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edge: interrupted", file=sys.stderr)
        return 130
    _emit(out, args.json)
    return out.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
