"""`edge targets`: the devices edge can reach (``list``) and what one has (``check``)."""
from __future__ import annotations

import argparse

from .common import Output, add_target_options, command, known, render_table


def _targets_list(args: argparse.Namespace) -> Output:
    from ..targets import load_targets

    rows = [t.to_dict() for t in load_targets(args.targets_file).values()]
    shown = [{"name": r["name"], "transport": r["transport"], "profile": r["profile"],
              "address": (f"{r['user'] + '@' if r['user'] else ''}{r['host']}"
                          f"{':' + str(r['port']) if r['port'] else ''}" if r["host"]
                          else r["serial"] or "this machine"),
              "workdir": r["workdir"], "source": r["source"]} for r in rows]
    return Output(rows, render_table(shown, ["name", "transport", "profile", "address", "workdir", "source"]))


def _targets_check(args: argparse.Namespace) -> Output:
    from ..devices import check_target

    info = check_target(args.target, args.targets_file, args.trust_new_host)
    dev = info["device"]
    runtimes = ", ".join(f"{k} {v}" for k, v in dev["runtimes"].items()) or "(none importable)"
    lines = [f"target {info['target']} ({info['transport']}), profile {info['profile']}",
             f"  arch: {dev['arch']}", f"  cores: {known(dev['cores'])}",
             f"  RAM: {known(dev['ram_mb'], ' MB')}",
             f"  memory limit: {known(dev['memory_limit_mb'], ' MB')}",
             f"  free disk in workdir: {known(dev['free_disk_mb'], ' MB')}",
             f"  python: {dev['python'] or '(not runnable)'}", f"  runtimes: {runtimes}",
             "  profile matches the device" if info["profile_matches"]
             else "  profile does NOT match the device:"]
    lines += [f"    - {m}" for m in info["mismatches"]]
    return Output(info, "\n".join(lines))


def add_targets(sub) -> None:
    """`edge targets list` and `edge targets check`."""
    p = sub.add_parser("targets", help="the devices edge can reach")
    s = p.add_subparsers(dest="targets_command", required=True)
    add_target_options(command(s, "list", _targets_list, "list the known targets"), needs_target=False)
    check = command(s, "check", _targets_check,
                     "connect and report arch, RAM, disk, runtimes and whether the profile matches")
    check.add_argument("target", help="target name")
    check.add_argument("--trust-new-host", action="store_true",
                       help="accept and record an unknown SSH host key")
    add_target_options(check, needs_target=False)
