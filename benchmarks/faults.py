"""Faults injected into a real SSH device, and what survived them.

Starts a one-device lab (own network namespace, shaped link, memory cgroup, small work
filesystem; needs root), then injects, each the given number of times:

* **link cut mid-push**: a 50 MB artifact is pushed and, once half of it is on the device,
  the device's sessions are killed (odd rounds) or its link is taken down (even rounds,
  restored after the push gave up on the stall). Then the device must hold, at the final
  path, the previous verified version or nothing; the push is repeated and must resume
  (sending at most 60 % of the bytes), verify, and leave no partial file behind;
* **connection dropped while a command runs** (sessions killed): a ConnectError naming
  the device, never "exited -1";
* **runner killed by the memory cgroup**: OutOfMemoryError with the limit;
* **disk full**: DeviceFullError with the sizes, before a byte is sent, nothing left behind.

Prints a table of injected / handled as expected / files lost (goal: all handled, 0 lost)
and the resumed share of the bytes.

    .venv/bin/python benchmarks/faults.py [--cuts 20] [--size-mb 50] [--rate-mbit 200]
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from edge.errors import (CommandTimeoutError, ConnectError, DeviceFullError,  # noqa: E402
                         OutOfMemoryError)
from edge.targets import get_target  # noqa: E402
from edge.transports import connect  # noqa: E402
from edge.transports.base import _partial_key  # noqa: E402
from labtools import load_devicelab, process_running  # noqa: E402

MEMORY_MB = 512


def _wait(probe, timeout_s: float = 300.0):
    pause = threading.Event()
    for _ in range(int(timeout_s / 0.005)):
        if probe():
            return True
        pause.wait(0.005)
    return False


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def push_cut(dl, lab_dir, name, target, src: Path, remote: str, kind: str) -> dict:
    """One cut push and its resumption; what the device held after each."""
    size = src.stat().st_size
    partial = f"{remote}.part-{_partial_key(src, size)}"
    outcome: dict = {}

    def push():
        try:
            with connect(target) as tr:
                outcome["result"] = tr.put(src, remote)
        except Exception as exc:  # noqa: BLE001 - classified below
            outcome["error"] = exc

    with connect(target) as watch:
        before = watch.remote_sha256(remote)
        thread = threading.Thread(target=push)
        thread.start()
        reached = _wait(lambda: (watch._remote_size(partial) or 0) >= size // 2 or not thread.is_alive())
        (dl.kill_sessions if kind == "kill-sessions" else dl.cut)(lab_dir, name)
        thread.join()
    if kind == "cut-link":
        dl.restore(lab_dir, name)
    with connect(target) as tr:
        after_cut = tr.remote_sha256(remote)
        again = tr.put(src, remote)
        final = tr.remote_sha256(remote)
        leftovers = [f for f in tr.run(["ls", "-A", os.path.dirname(remote)], timeout_s=60).stdout.split()
                     if ".part-" in f]
    cut_mid_push = reached and isinstance(outcome.get("error"), (ConnectError, CommandTimeoutError))
    if not cut_mid_push:
        print(f"    not a clean cut: reached half {reached}, outcome {outcome!r}")
    return {"cut_mid_push": cut_mid_push, "intact": after_cut in (before, None) and final == _sha(src),
            "resumed_share": again.bytes_sent / size, "leftovers": leftovers}


def command_drop(dl, lab_dir, name, target, tag: str) -> bool:
    outcome: dict = {}

    def run():
        try:
            with connect(target) as tr:
                tr.run(["sleep", tag], timeout_s=600)
        except Exception as exc:  # noqa: BLE001 - classified below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    _wait(lambda: process_running(f"sleep {tag}"))
    dl.kill_sessions(lab_dir, name)
    thread.join()
    err = outcome.get("error")
    return isinstance(err, ConnectError) and "connection lost" in str(err)


def oom(target) -> bool:
    grab = f"x = bytearray({2 * MEMORY_MB} * 2**20); x[::4096] = b'x' * (len(x) // 4096)"
    try:
        with connect(target) as tr:
            tr.run([target.python, "-c", grab], timeout_s=300, check=False)
    except OutOfMemoryError as exc:
        return "out of memory" in str(exc) and "memory limit" in str(exc)
    return False


def disk_full(target, big: Path) -> bool:
    remote = f"{target.workdir}/full/{big.name}"
    try:
        with connect(target) as tr:
            tr.put(big, remote)
    except DeviceFullError as exc:
        with connect(target) as tr:
            empty = tr.run(["ls", "-A", os.path.dirname(remote)], timeout_s=60).stdout == ""
        return "MB are free" in str(exc) and empty
    return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cuts", type=int, default=20, help="cut pushes (half sessions killed, half link down)")
    ap.add_argument("--size-mb", type=int, default=50)
    ap.add_argument("--rate-mbit", type=int, default=200)
    ap.add_argument("--others", type=int, default=3, help="command drops, OOM kills and full disks, each")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("faults.py needs root (network namespaces, mounts, cgroups)", file=sys.stderr)
        return 2
    dl = load_devicelab()
    with tempfile.TemporaryDirectory(prefix="edge-faults-") as tmp:
        tmp = Path(tmp)
        lab_dir = tmp / "lab"
        state = dl.start(1, lab_dir, rate_mbit=args.rate_mbit, memory_mb=MEMORY_MB,
                         disk_mb=3 * args.size_mb)
        try:
            dev = state["devices"][0]
            if not dev["netns"]:
                print("no network namespace could be set up", file=sys.stderr)
                return 2
            target = dataclasses.replace(get_target(dev["name"], state["targets_file"]),
                                         stall_timeout_s=3)
            return run(args, dl, lab_dir, dev["name"], target, tmp)
        finally:
            dl.stop(lab_dir)


def run(args, dl, lab_dir, name, target, tmp: Path) -> int:
    src = tmp / "model.bin"
    src.write_bytes(os.urandom(args.size_mb * 1_000_000))
    remote = f"{target.workdir}/artifacts/model.bin"
    rows, shares = [], []
    for kind in ("kill-sessions", "cut-link"):
        rounds = [i for i in range(args.cuts) if (i % 2 == 0) == (kind == "kill-sessions")]
        ok = lost = left = 0
        for i in rounds:
            with open(src, "r+b") as f:  # a new version each round
                f.write(i.to_bytes(8, "little"))
            r = push_cut(dl, lab_dir, name, target, src, remote, kind)
            ok += r["cut_mid_push"] and r["intact"] and not r["leftovers"] and r["resumed_share"] <= 0.6
            lost += not r["intact"]
            left += len(r["leftovers"])
            shares.append(r["resumed_share"])
            print(f"  {kind} round {i + 1}: cut mid-push {r['cut_mid_push']}, intact {r['intact']}, "
                  f"resumed {r['resumed_share']:.0%} of the bytes, partial files left {len(r['leftovers'])}",
                  flush=True)
        rows.append((f"push cut ({kind})", len(rounds), ok, lost, left))
    drops = sum(command_drop(dl, lab_dir, name, target, f"{300 + i}.5") for i in range(args.others))
    rows.append(("command dropped", args.others, drops, 0, 0))
    rows.append(("OOM kill", args.others, sum(oom(target) for _ in range(args.others)), 0, 0))
    big = tmp / "too-big.bin"
    with open(big, "wb") as f:
        f.truncate(4 * args.size_mb * 1_000_000)
    rows.append(("disk full", args.others, sum(disk_full(target, big) for _ in range(args.others)), 0, 0))
    print(f"\n{args.size_mb} MB artifact, {args.rate_mbit} Mbit/s link, memory limit {MEMORY_MB} MB, "
          f"work filesystem {3 * args.size_mb} MB")
    print(f"{'fault':28} {'injected':>8} {'handled':>8} {'lost':>5} {'partials left':>14}")
    for fault, n, ok, lost, left in rows:
        print(f"{fault:28} {n:>8} {ok:>8} {lost:>5} {left:>14}")
    if shares:
        print(f"resumed push sent {statistics.median(shares):.0%} of the bytes (median; "
              f"range {min(shares):.0%}-{max(shares):.0%})")
    return 0 if all(ok == n and lost == 0 and left == 0 for _, n, ok, lost, left in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
