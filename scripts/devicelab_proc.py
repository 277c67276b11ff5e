"""What scripts/devicelab and scripts/devicelab_adb share: running tools, the lab's private
directory and state, network namespaces, memory cgroups, waiting for state and killing
process trees. Imported from the scripts' own directory (it is no part of `edge`)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

log = logging.getLogger("devicelab")

NETNS_PREFIX = "edgelab-"
START_TIMEOUT_S = 120.0  # generous: labs start on machines busy with other jobs


class LabError(RuntimeError):
    """The lab cannot be used safely, or a step of it failed; the CLI prints it and exits 1."""


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=60)


def _words(argv: list[str]) -> list[str]:
    return _run(argv, check=False).stdout.split() if shutil.which(argv[0]) else []


def lab_id(lab_dir: Path) -> str:
    """6 hex digits naming the namespaces, interfaces and cgroups of the lab in ``lab_dir``."""
    return hashlib.sha256(f"{os.geteuid()}:{Path(lab_dir).resolve()}".encode()).hexdigest()[:6]


def private_dir(lab_dir: Path, create: bool = True) -> Path:
    """``lab_dir`` resolved (made 0700 if missing); LabError if another user could plant in it."""
    lab_dir, uid = Path(lab_dir), os.geteuid()
    if lab_dir.is_symlink() and lab_dir.lstat().st_uid != uid:
        raise LabError(f"{lab_dir} is a symlink of uid {lab_dir.lstat().st_uid}; refusing it")
    lab_dir = lab_dir.resolve()
    if create:
        with contextlib.suppress(FileExistsError):
            lab_dir.mkdir(mode=0o700, parents=True)
    elif not lab_dir.exists():
        return lab_dir
    st = lab_dir.stat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
        raise LabError(f"{lab_dir} belongs to uid {st.st_uid}, not to you (uid {uid}), or is no "
                       "directory; use another --dir")
    if st.st_mode & 0o022:
        raise LabError(f"{lab_dir} is writable by group or others (mode {st.st_mode & 0o777:o}); "
                       "chmod go-w it or use another --dir")
    state = lab_dir / "lab.json"
    if os.path.lexists(state) and (not stat.S_ISREG(state.lstat().st_mode)
                                   or state.lstat().st_uid != uid):
        raise LabError(f"{state} is not a regular file of yours; refusing it")
    return lab_dir


def _cgroup_root() -> Path | None:
    """This process's own cgroup v1 memory directory, if writable."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                root = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
                return root if os.access(root, os.W_OK) else None
    except OSError:
        return None
    return None


def _used_slots() -> set[int]:
    """Slots held by any lab's namespace, interface or 10.77.<slot>.x address, leftovers too."""
    names = _words(["ip", "netns", "list"]) + _words(["ip", "-o", "link", "show"])
    used = {int(m[1]) for w in names if (m := re.match(rf"(?:{NETNS_PREFIX}|elab|el)(\d+)", w))}
    return used | {int(m[1]) for w in _words(["ip", "-o", "-4", "addr", "show"])
                   if (m := re.match(r"10\.77\.(\d+)\.", w))}


def setup_netns(slot: int, rate_mbit: int, lid: str = "0") -> dict:
    """Namespace + veth pair + tbf shaping; returns what stop needs. Raises on failure."""
    ns, host_if, dev_if = f"{NETNS_PREFIX}{slot}-{lid}", f"el{slot}-{lid}h", f"el{slot}-{lid}d"
    host_ip, dev_ip, in_ns = f"10.77.{slot}.1", f"10.77.{slot}.2", ["ip", "-n", ns]
    try:
        for cmd in (["ip", "netns", "add", ns],
                    ["ip", "link", "add", host_if, "type", "veth", "peer", "name", dev_if],
                    ["ip", "link", "set", dev_if, "netns", ns],
                    ["ip", "addr", "add", f"{host_ip}/24", "dev", host_if],
                    ["ip", "link", "set", host_if, "up"],
                    in_ns + ["addr", "add", f"{dev_ip}/24", "dev", dev_if],
                    in_ns + ["link", "set", dev_if, "up"], in_ns + ["link", "set", "lo", "up"]):
            _run(cmd)
    except subprocess.CalledProcessError as exc:
        _run(["ip", "netns", "del", ns], check=False)
        _run(["ip", "link", "del", host_if], check=False)
        raise RuntimeError(f"{' '.join(exc.cmd)}: {exc.stderr.strip()}") from None
    tbf = ["root", "tbf", "rate", f"{rate_mbit}mbit", "burst", "256kb", "latency", "50ms"]
    res = [_run(["tc", "qdisc", "add", "dev", host_if, *tbf], check=False),
           _run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev_if, *tbf],
                check=False)] if rate_mbit else []
    failed = [r.stderr.strip() for r in res if r.returncode != 0]
    if failed:
        log.warning("bandwidth shaping skipped: %s", "; ".join(failed))
    return {"netns": ns, "host_if": host_if, "dev_if": dev_if, "address": dev_ip, "slot": slot,
            "rate_mbit": rate_mbit if res and not failed else None}



def limit_memory(pid: int, name: str, budget_mb: int) -> str | None:
    """Put ``pid`` (sshd, so every session it forks) in a cgroup capped at budget_mb."""
    root = _cgroup_root()
    if root is None:
        log.warning("memory limit skipped for %s: no writable cgroup v1 memory controller", name)
        return None
    group = root / name
    try:
        group.mkdir(exist_ok=True)
        (group / "memory.limit_in_bytes").write_text(str(budget_mb * 1024 * 1024))
        (group / "cgroup.procs").write_text(str(pid))
    except OSError as exc:
        log.warning("memory limit skipped for %s: %s", name, exc)
        return None
    return str(group)


def _wait_for(what: str, probe, timeout_s: float):
    """Poll ``probe`` until it returns something other than None; LabError after timeout_s."""
    deadline, delay = time.monotonic() + timeout_s, 0.01
    while (value := probe()) is None:
        if time.monotonic() > deadline:
            raise LabError(f"{what} within {timeout_s:g} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    return value


def _wait_port(address: str, port: int, timeout_s: float = START_TIMEOUT_S,
               what: str = "sshd") -> None:
    def answers():
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=5):
            return True

    _wait_for(f"{what} on {address}:{port} did not answer", answers, timeout_s)


def _procs() -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, command line)} of every live (not zombie) process."""
    procs = {}
    for entry in os.scandir("/proc"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ")
            if fields[0] != "Z":
                procs[int(entry.name)] = (int(fields[1]), cmd.decode("utf-8", "replace"))
    return procs


def _descendants(pids, procs: dict) -> set[int]:
    found, todo = set(), list(pids)
    while todo:
        parent = todo.pop()
        kids = {p for p, (ppid, _) in procs.items() if ppid == parent} - found
        found |= kids
        todo += kids
    return found


def _kill_tree(roots, include_roots: bool) -> int:
    """SIGSTOP the trees under ``roots`` until no new process appears, then SIGKILL them all."""
    roots, stopped = set(roots), set()
    while True:
        procs = _procs()
        new = (_descendants(roots, procs) | (roots if include_roots else set())) & procs.keys()
        if not (new := new - stopped):
            break
        for pid in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        stopped |= new
    killed = 0
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed



def load_state(lab_dir: Path) -> dict:
    """DIR/lab.json ({"devices": []} when there is none), after checking DIR is private."""
    path = private_dir(lab_dir, create=False) / "lab.json"
    return json.loads(path.read_text()) if path.exists() else {"devices": []}


def device_argv(d: Path, netns: str | None, disk_mb: int | None, argv: list[str]) -> list[str]:
    """``argv`` inside the device's namespaces, with a tmpfs of disk_mb on d/work when asked."""
    setup = []
    if disk_mb:
        setup.append(f"mount -t tmpfs -o size={int(disk_mb)}m edgelab-work "
                     f"{shlex.quote(str(d / 'work'))} || exit 1")
    if netns:
        # `ip netns exec` remounts /sys, hiding the cgroup tree; mount the memory controller
        # again so the device can read its own limit (the limit holds either way)
        setup.append("mount -t tmpfs cgroup /sys/fs/cgroup && mkdir /sys/fs/cgroup/memory && "
                     "mount -t cgroup -o memory memory /sys/fs/cgroup/memory || "
                     "echo 'devicelab: cgroup tree not visible on the device' >&2")
    if not setup:
        return argv
    enter = ["ip", "netns", "exec", netns] if netns else ["unshare", "-m", "--propagation", "slave"]
    return enter + ["sh", "-c", "; ".join(setup) + '; exec "$@"', "sh", *argv]


def shape(dev: dict, rate_mbit: int) -> None:
    """Set the tbf rate of both ends of a device's link (0: unshaped)."""
    if not dev.get("netns"):
        raise LabError(f"{dev['name']} shares the loopback interface: shaping needs its own "
                       "network namespace (start the lab as root, without --no-netns)")
    for prefix, iface in (([], dev["host_if"]), (["ip", "netns", "exec", dev["netns"]], dev["dev_if"])):
        _run(prefix + ["tc", "qdisc", "del", "dev", iface, "root"], check=False)
        if rate_mbit:
            _run(prefix + ["tc", "qdisc", "add", "dev", iface, "root", "tbf", "rate",
                           f"{rate_mbit}mbit", "burst", "256kb", "latency", "50ms"])
