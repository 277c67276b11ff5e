"""adb devices for scripts/devicelab: one Debian ``adbd`` (package adbd, Provides
android-tools-adbd) per device, beside the lab's sshd devices.

Each adbd runs as root (it must) in the device's network namespace, with the same shaped
link and memory cgroup, listening on ADB_PORT_BASE + slot: outside 5555-5585, which the adb
server probes as emulators (a device there would be listed twice, once as emulator-5554).
adbd also listens on vsock at the same port, and vsock ports are machine-wide: the slot,
taken under the lab's machine-wide lock, keeps them apart. The lab then runs
``adb connect ADDR:PORT`` with whichever adb server the environment names
(``ANDROID_ADB_SERVER_PORT``, else 5037) and waits until ``adb devices`` shows ``device``.

Every adb call here has a timeout and writes to files, not pipes: an adb server forked by
the client keeps no pipe of ours open, and a hung server cannot hang the lab.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from devicelab_proc import (START_TIMEOUT_S, LabError, _kill_tree, _procs, _wait_for, _wait_port,
                            device_argv, limit_memory, log)

ADB_PORT_BASE = 7000  # + the device's slot (1-250)
ADB_TIMEOUT_S = 30.0
ADBD_CANDIDATES = ("/usr/sbin/adbd", "/usr/lib/android-sdk/platform-tools/adbd")
DEVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def adbd_path() -> str | None:
    """$EDGE_ADBD, else Debian's adbd; None when there is none."""
    for path in (os.environ.get("EDGE_ADBD"), shutil.which("adbd"), *ADBD_CANDIDATES):
        if path and os.access(path, os.X_OK):
            return path
    return None


def why_no_adb() -> str | None:
    """Why this machine cannot run adb lab devices, or None when it can."""
    if os.geteuid() != 0:
        return "adbd must run as root"
    if adbd_path() is None:
        return "adbd is not installed (scripts/setup-system installs it from bookworm-backports)"
    if shutil.which("adb") is None:
        return "the adb client is not installed (scripts/setup-system)"
    return None


def server_port() -> int:
    """The adb server this process's adb calls use (ANDROID_ADB_SERVER_PORT, else 5037)."""
    value = os.environ.get("ANDROID_ADB_SERVER_PORT", "")
    return int(value) if value.isdigit() else 5037


def adb(args: list[str], timeout_s: float = ADB_TIMEOUT_S,
        port: int | None = None) -> subprocess.CompletedProcess:
    """``adb ARGS`` against server ``port``; LabError when it does not finish in timeout_s."""
    env = dict(os.environ, ANDROID_ADB_SERVER_PORT=str(port or server_port()))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(["adb", *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise LabError(f"`adb {' '.join(args)}` gave no answer within {timeout_s:g} s (adb "
                           f"server on port {env['ANDROID_ADB_SERVER_PORT']} hung?)") from None
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, code, out.read().decode(errors="replace"),
                                           err.read().decode(errors="replace"))


def device_states(port: int | None = None) -> dict[str, str]:
    """{serial: state} from ``adb devices``."""
    rows = adb(["devices"], port=port).stdout.splitlines()[1:]
    return {f[0]: f[1] for line in rows if len(f := line.split()) >= 2}


def connect(serial: str, timeout_s: float = START_TIMEOUT_S) -> None:
    """``adb connect serial``, then wait until ``adb devices`` lists it as ``device``."""
    def ready():
        res = adb(["connect", serial])
        if "connected to" not in res.stdout:
            log.info("adb connect %s: %s", serial, (res.stdout + res.stderr).strip())
            return None
        return True if device_states().get(serial) == "device" else None

    _wait_for(f"adb did not list {serial} as 'device'", ready, timeout_s)


def server_listening(port: int) -> bool:
    """Whether an adb server answers on ``port`` (most adb commands would start one)."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        return True
    return False


def disconnect(serials, port: int | None = None) -> None:
    """``adb disconnect`` each serial, best effort (the server may be gone or hung); starts
    no server where none runs."""
    if not server_listening(port or server_port()):
        return
    for serial in serials:
        try:
            adb(["disconnect", serial], timeout_s=10, port=port)
        except (LabError, OSError) as exc:
            log.info("adb disconnect %s skipped: %s", serial, exc)


def server_pids(port: int) -> set[int]:
    """Pids of the adb server listening on ``port`` (``adb -L tcp:PORT fork-server``)."""
    spec = re.compile(rf"\btcp:(?:localhost:|127\.0\.0\.1:)?{port}( |$)")
    return {pid for pid, (_, cmd) in _procs().items() if "fork-server" in cmd and spec.search(cmd)}


def start_server(port: int) -> None:
    """Start an adb server on ``port`` (a hung one there is killed first)."""
    for attempt in (1, 2):
        try:
            res = adb(["start-server"], port=port)
            if res.returncode == 0:
                return
            why = (res.stdout + res.stderr).strip()
        except LabError as exc:
            why = str(exc)
        kill_server(port)
        log.info("adb server on port %d failed to start (attempt %d): %s", port, attempt, why)
    raise LabError(f"adb server on port {port} did not start: {why}")


def kill_server(port: int) -> None:
    """Stop the adb server on ``port``: ``adb kill-server``, then SIGKILL what is left of it."""
    with contextlib.suppress(LabError, OSError):
        adb(["kill-server"], timeout_s=10, port=port)
    pids = server_pids(port)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_for(f"adb server {sorted(pids)} did not exit",
              lambda: None if pids & _procs().keys() else True, START_TIMEOUT_S)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_lab_adbd(pid: int | None, dev_dir: str | Path) -> bool:
    """Whether ``pid`` is a live adbd started in ``dev_dir`` (its working directory)."""
    cmd = _procs().get(pid or -1, (0, ""))[1]
    with contextlib.suppress(OSError):
        return "adbd" in cmd.split(" ")[0] and os.readlink(f"/proc/{pid}/cwd") == str(dev_dir)
    return False


def lab_adbd_pids(lab_dir: Path) -> set[int]:
    """Every adbd working in one of the lab's adb device directories (namespaced or not)."""
    dirs = re.compile(rf"{re.escape(str(lab_dir))}/adb\d+")
    found = set()
    for pid, (_, cmd) in _procs().items():
        with contextlib.suppress(OSError):
            if "adbd" in cmd.split(" ")[0] and dirs.fullmatch(os.readlink(f"/proc/{pid}/cwd")):
                found.add(pid)
    return found


def _spawn(dev: dict) -> int:
    """Start the device's adbd in its namespaces; returns its pid once its port answers."""
    d = Path(dev["dir"])
    env = {"PATH": DEVICE_PATH, "HOME": str(d), "LANG": "C.UTF-8", "ADBD_PORT": str(dev["port"])}
    with open(d / "adbd.log", "ab") as out:
        proc = subprocess.Popen(device_argv(d, dev.get("netns"), dev.get("disk_mb"), [adbd_path()]),
                                cwd=d, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    _SPAWNED.append(proc)  # reaped by Python, not left a zombie of a long-lived caller

    def up():
        if proc.poll() is not None:
            raise LabError(f"adbd of {dev['name']} exited {proc.returncode}: "
                           f"{(d / 'adbd.log').read_text(errors='replace')[-500:].strip()}")
        with contextlib.suppress(OSError), socket.create_connection(
                (dev["address"], dev["port"]), timeout=5):
            return True
        return None

    _wait_for(f"adbd of {dev['name']} on {dev['address']}:{dev['port']} did not answer",
              up, START_TIMEOUT_S)
    return proc.pid


_SPAWNED: list[subprocess.Popen] = []


def start_adb_device(lab_dir: Path, lid: str, index: int, profile: str, budget_mb: int,
                     disk_mb: int | None = None, net: dict | None = None) -> dict:
    """Start adbd for device ``adb<index>`` and connect the adb server to it."""
    d = lab_dir / f"adb{index}"
    d.mkdir(mode=0o700, exist_ok=True)
    (d / "work").mkdir(exist_ok=True)
    net = net or {"netns": None, "address": "127.0.0.1", "rate_mbit": None, "host_if": None,
                  "dev_if": None}
    port = ADB_PORT_BASE + net["slot"] if net.get("slot") else free_port()
    dev = {"name": f"adb{index}", "transport": "adb", "serial": f"{net['address']}:{port}",
           "dir": str(d), "port": port, "profile": profile, "disk_mb": disk_mb, **net}
    dev["pid"] = _spawn(dev)
    dev["cgroup"] = limit_memory(dev["pid"], f"edgelab-{lid}-adb{index}", budget_mb)
    dev["memory_limit_mb"] = budget_mb if dev["cgroup"] else None
    connect(dev["serial"])
    return dev


def unplug(dev: dict) -> None:
    """SIGKILL the device's adbd and its sessions: to the adb server it drops off the network."""
    if not is_lab_adbd(dev.get("pid"), dev["dir"]):
        raise LabError(f"{dev['name']}'s adbd (pid {dev.get('pid')}) is not running")
    pids = {dev["pid"]}
    _kill_tree(pids, include_roots=True)
    _wait_for(f"adbd {dev['pid']} did not exit", lambda: None if pids & _procs().keys() else True,
              START_TIMEOUT_S)


def replug(dev: dict) -> dict:
    """Start the device's adbd again (same port, cgroup and namespace); returns it updated
    once ``adb devices`` lists it as ``device`` again."""
    if is_lab_adbd(dev.get("pid"), dev["dir"]):
        raise LabError(f"{dev['name']}'s adbd (pid {dev['pid']}) is still running; unplug it first")
    pid = _spawn(dev)
    if dev.get("cgroup"):
        Path(dev["cgroup"], "cgroup.procs").write_text(str(pid))
    connect(dev["serial"])
    return {**dev, "pid": pid}


def wait_port(dev: dict) -> None:
    """Wait until the device's adbd answers (after a link restore)."""
    _wait_port(dev["address"], dev["port"], what="adbd")
