"""Shared pieces of the command line: the Output a handler returns, the common options,
plain-text tables."""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from typing import Any, Callable


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
TOP.add_argument("--host-threads", type=int, default=None, metavar="N",
                 help="torch threads for edge's own work on this machine (export, validation, planning); "
                      "default $EDGE_HOST_THREADS, else half the cores: more threads than free cores make "
                      "torch collapse on a shared host. Devices use --threads of bench/compare")


def command(sub, name: str, handler: Callable[[argparse.Namespace], Output], help_: str):
    p = sub.add_parser(name, parents=[COMMON], help=help_, description=help_)
    p.set_defaults(handler=handler)
    return p


def given(args, *names: str) -> dict:
    """The options the user set (not None), so the API's own defaults are the only defaults."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


MODEL_HELP = "zoo name, path/to/file.py:factory, Hugging Face directory or .gguf file"


def add_text_options(p) -> None:
    """--eval-text / --calib-text: the text a language model is measured / calibrated on."""
    p.add_argument("--eval-text", default=None, metavar="FILE",
                   help="language models: UTF-8 text for perplexity and validation (default: the shipped text)")
    p.add_argument("--calib-text", default=None, metavar="FILE",
                   help="language models: UTF-8 text for calibration and sensitivity (default: the shipped text)")


def add_target_options(p, needs_target: bool = True) -> None:
    """--target / --trust-new-host (when the command needs a target) and --targets-file."""
    if needs_target:
        p.add_argument("--target", required=True, help="target name (see `edge targets list`)")
        p.add_argument("--trust-new-host", action="store_true",
                       help="accept and record an unknown SSH host key in the target's known_hosts")
    p.add_argument("--targets-file", help="read targets only from this YAML file")


def apply_text_options(args) -> None:
    """The loaders read $EDGE_EVAL_TEXT / $EDGE_CALIB_TEXT; the options set them for this process."""
    import os

    for kind in ("eval", "calib"):
        value = getattr(args, f"{kind}_text", None)
        if value:
            os.environ[f"EDGE_{kind.upper()}_TEXT"] = value


def render_table(rows: list[dict], columns: list[str]) -> str:
    """Plain fixed-width table; values already formatted as strings or numbers."""
    if not rows:
        return "(none)"
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def known(value: Any, unit: str = "") -> str:
    return "unknown" if value is None else f"{value:g}{unit}" if isinstance(value, float) \
        else f"{value}{unit}"


def add_device_wait_option(p) -> None:
    from ..device_lock import DEFAULT_DEVICE_WAIT_S

    p.add_argument("--device-wait", type=float, default=None, metavar="SECONDS",
                   help="how long to wait for a device another bench is measuring on, 0 = refuse "
                        f"at once (default {DEFAULT_DEVICE_WAIT_S:g})")
