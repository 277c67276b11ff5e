"""The `edge` command line. The only place that prints.

One module per command group (``models``, ``profiles``, ``export`` (with ``plan``),
``targets``, ``devices`` (``deploy``, ``bench``), ``compare``), each with an
``add_<group>(sub)`` function that declares its subcommands; a handler takes the parsed
args and returns an :class:`Output` (machine-readable ``data`` for ``--json``, human
``text`` otherwise, exit code).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from ..errors import EdgeError
from .common import TOP, Output, apply_text_options, log
from .compare import add_compare
from .devices import add_devices
from .export import add_export, add_plan
from .models import add_models
from .profiles import add_profiles
from .targets import add_targets

COMMAND_GROUPS = [add_models, add_profiles, add_export, add_plan, add_targets, add_devices,
                  add_compare]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge", parents=[TOP],
        description="Plan, compress, export, deploy and benchmark PyTorch models on edge devices.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMAND_GROUPS:
        add(sub)
    return parser


# Toolchains that log their own chatter (optional kernels they could not load, deprecation
# notes, graph-pass progress); a user sees edge's own lines unless --debug.
TOOLCHAIN_LOGGERS = ("torch", "torchao", "onnx_ir", "onnxscript", "tensorflow", "absl", "jax",
                     "transformers", "matplotlib", "PIL", "urllib3", "filelock", "paramiko")


def quiet_toolchains() -> None:
    """Only errors from the toolchains' loggers, and none of their Python warnings."""
    import os
    import warnings

    os.environ.setdefault("TORCH_LOGS", "-torch")  # torch resets its logger's level on import
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bars
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in TOOLCHAIN_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|torchao|executorch|onnx|transformers)")


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
    if not debug:
        quiet_toolchains()
    apply_text_options(args)
    if getattr(args, "host_threads", None) is not None:
        import os

        if args.host_threads < 1:
            print(f"edge: error: expected --host-threads >= 1, found {args.host_threads}", file=sys.stderr)
            return 2
        os.environ["EDGE_HOST_THREADS"] = str(args.host_threads)
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
    try:
        _emit(out, args.json)
    except BrokenPipeError:  # `edge ... | head`: the reader left; not an error of ours
        sys.stderr.close()
    return out.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
