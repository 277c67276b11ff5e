"""Transports: how `edge` reaches a device (``local``, ``ssh``, ``adb``).

Each plug-in is one file implementing :class:`edge.transports.base.Transport`, registered
here as a ``"module:Class"`` string and imported on first use (ssh pulls in paramiko).
A transport also owns its target fields: :mod:`edge.targets` asks the registered class to
check them and fill its defaults (``validate_fields``, ``default_workdir``).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:  # edge.targets reads this registry to validate target fields
    from ..targets import Target

TRANSPORTS: dict[str, str] = {
    "local": "edge.transports.local:LocalTransport",
    "ssh": "edge.transports.ssh:SshTransport",
    "adb": "edge.transports.adb:AdbTransport",
}


def transport_class(name: str) -> type:
    """The Transport class registered under ``name``."""
    if name not in TRANSPORTS:
        raise ConfigError(f"unknown transport '{name}'; expected one of {', '.join(TRANSPORTS)}")
    module_name, _, attr = TRANSPORTS[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def connect(target: Target, trust_new_host: bool = False):
    """A (not yet connected) transport for ``target``; use it as a context manager."""
    return transport_class(target.transport)(target, trust_new_host=trust_new_host)
