"""The device lab's fault hooks (scripts/devicelab cut|restore|shape|kill-sessions|unplug|
replug) and the checks of whether a device's daemon still runs."""
from __future__ import annotations

import json
from pathlib import Path

import devicelab_adb as adblab
from devicelab_proc import (LabError, _kill_tree, _procs, _run, _wait_port, load_state,
                            private_dir, shape)


def _is_lab_sshd(cmdline: str, dev_dir: str | Path) -> bool:
    """Whether ``cmdline`` is the listening sshd of the device in ``dev_dir``."""
    return "sshd" in cmdline and f"{Path(dev_dir) / 'sshd_config'} " in cmdline + " "


def running(dev: dict, procs: dict) -> bool:
    """Whether the device's daemon (its sshd, or its adbd) is alive."""
    if dev.get("transport") == "adb":
        return adblab.is_lab_adbd(dev.get("pid"), dev["dir"])
    return _is_lab_sshd(procs.get(dev.get("pid"), (0, ""))[1], dev["dir"])


def save_state(lab_dir: Path, state: dict) -> None:
    tmp = lab_dir / "lab.json.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(lab_dir / "lab.json")


def _device(lab_dir: Path, name: str, transport: str | None = None) -> dict:
    for dev in load_state(lab_dir)["devices"]:
        if dev["name"] == name:
            if transport and dev.get("transport", "ssh") != transport:
                raise LabError(f"{name} is no {transport} device")
            return dev
    raise LabError(f"no device {name!r} in a lab at {lab_dir}")


def _set_link(lab_dir: Path, name: str, state: str) -> None:
    dev = _device(lab_dir, name)
    if not dev.get("netns"):
        raise LabError(f"{name} shares the loopback interface: cut and restore need its own "
                       "network namespace (start the lab as root, without --no-netns)")
    # the device's end: with the host's end down its route would go, and this machine's
    # default gateway would then answer new connections in the device's place
    _run(["ip", "-n", dev["netns"], "link", "set", dev["dev_if"], state])


def cut(lab_dir: Path, name: str) -> None:
    """Take ``name``'s link down: its TCP connections stall, without a reset, until restore."""
    _set_link(lab_dir, name, "down")


def restore(lab_dir: Path, name: str) -> None:
    """Bring ``name``'s link back up after :func:`cut`; returns once its daemon answers again."""
    _set_link(lab_dir, name, "up")
    dev = _device(lab_dir, name)
    _wait_port(dev["address"], dev["port"], what="adbd" if dev.get("transport") == "adb" else "sshd")


def set_rate(lab_dir: Path, name: str, rate_mbit: int) -> None:
    """Shape ``name``'s link to ``rate_mbit`` both ways (0: unshaped) until the next set_rate."""
    shape(_device(lab_dir, name), rate_mbit)


def kill_sessions(lab_dir: Path, name: str) -> int:
    """SIGKILL every process under ``name``'s daemon (which stays); returns how many."""
    dev = _device(lab_dir, name)
    if not running(dev, _procs()):
        raise LabError(f"{name}'s daemon (pid {dev['pid']}) is not running")
    return _kill_tree([dev["pid"]], include_roots=False)


def unplug(lab_dir: Path, name: str) -> None:
    """Kill adb device ``name``'s adbd: the adb server lists it ``offline`` until replug."""
    adblab.unplug(_device(lab_dir, name, "adb"))


def replug(lab_dir: Path, name: str) -> None:
    """Start ``name``'s adbd again; returns once ``adb devices`` lists it as ``device``."""
    new = adblab.replug(_device(lab_dir, name, "adb"))
    state = load_state(lab_dir)
    state["devices"] = [new if dev["name"] == name else dev for dev in state["devices"]]
    save_state(private_dir(lab_dir, create=False), state)
