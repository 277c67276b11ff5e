"""`edge targets`: the devices edge can reach (``list``), what one has (``check``) and making one
ready to bench (``setup``)."""
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


def _targets_setup(args: argparse.Namespace) -> Output:
    from ..profiles import load_profile
    from ..provision import setup_target
    from ..targets import get_target

    tgt = get_target(args.target, args.targets_file)
    backends = args.backends.split(",") if args.backends else list(load_profile(tgt.profile).runtimes)
    info = setup_target(tgt, backends, trust_new_host=args.trust_new_host, offline=args.offline)
    lines = [f"target {info['target']}: {info['machine']}, Python {info['python']} ({info['libc']}); "
             f"venv {info['venv']}"]
    lines += [f"  installed {i['name']} {i['version']} ({i['bytes'] / 2**20:.1f} MB)" for i in info["installed"]]
    if info["already_present"]:
        lines.append(f"  already present: {', '.join(info['already_present'])}")
    lines += [f"  {b}: unavailable: {why}" for b, why in info["unavailable"].items()]
    lines.append(f"{'installed nothing' if not info['installed'] else 'installed %d package(s)' % len(info['installed'])}"
                 f"; pushed {info['bytes_pushed'] / 2**20:.1f} MB; venv size {known(info['venv_mb'], ' MB')}")
    return Output(info, "\n".join(lines), exit_code=10 if info["unavailable"] else 0)


def add_targets(sub) -> None:
    """`edge targets list`, `edge targets check` and `edge targets setup`."""
    p = sub.add_parser("targets", help="the devices edge can reach")
    s = p.add_subparsers(dest="targets_command", required=True)
    add_target_options(command(s, "list", _targets_list, "list the known targets"), needs_target=False)
    check = command(s, "check", _targets_check,
                     "connect and report arch, RAM, disk, runtimes and whether the profile matches")
    check.add_argument("target", help="target name")
    check.add_argument("--trust-new-host", action="store_true",
                       help="accept and record an unknown SSH host key")
    add_target_options(check, needs_target=False)
    setup = command(s, "setup", _targets_setup,
                    "install the runtimes into a venv in the target's workdir, from wheels the host downloads")
    setup.add_argument("target", help="target name")
    setup.add_argument("--backends", default=None,
                       help="comma-separated backends whose runtimes to install (default: the profile's runtimes)")
    setup.add_argument("--offline", action="store_true",
                       help="use only the host's wheel cache ($EDGE_WHEEL_CACHE or ~/.cache/edge/wheels)")
    setup.add_argument("--trust-new-host", action="store_true",
                       help="accept and record an unknown SSH host key")
    add_target_options(setup, needs_target=False)
