"""SSH keys: known_hosts read and written as OpenSSH does, host keys checked, identity files
checked before connecting (unreadable, missing, passphrase-protected: each said plainly).

Key material never reaches a log or a message: only paths and fingerprints.
"""
from __future__ import annotations

import base64
import fcntl
import logging
import os
from pathlib import Path

import paramiko

from ..errors import AuthError, HostKeyError

log = logging.getLogger(__name__)


def known_hosts_name(host: str, port: int) -> str:
    """How OpenSSH names a host in known_hosts: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


def append_known_host(path: Path, line: str) -> None:
    """Append one known_hosts line under a lock, starting a new line if the file lacks a final newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # two edge processes trusting hosts at once must not interleave
        f.seek(0, os.SEEK_END)
        size = f.tell()
        last = ""
        if size:
            f.seek(size - 1)
            last = f.read(1)
        f.write(("\n" if size and last != "\n" else "") + line + "\n")


def load_known_hosts(client: paramiko.SSHClient, path: Path) -> int:
    """Load the lines paramiko understands; skip the rest as OpenSSH skips what it cannot parse.

    Markers (``@cert-authority``, ``@revoked``) and broken lines are skipped (and counted)
    instead of failing the connection; returns how many lines were skipped.
    """
    keys, skipped = client.get_host_keys(), 0
    for lineno, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entry = None if line.startswith("@") else paramiko.hostkeys.HostKeyEntry.from_line(line, lineno)
        except Exception:  # noqa: BLE001 - any malformed line: OpenSSH ignores it too
            entry = None
        if entry is None:
            skipped += 1
            continue
        for name in entry.hostnames:
            keys.add(name, entry.key.get_name(), entry.key)
    if skipped:
        log.info("%s: skipped %d line(s) paramiko cannot use (markers such as @cert-authority, or broken "
                 "lines)", path, skipped)
    return skipped




def passphrase_message(where: str, identity_file: str | None) -> str:
    return (f"{where}: the key {identity_file} is protected by a passphrase, and edge never "
            f"asks for one; load it into ssh-agent (`ssh-add {identity_file}`) in the shell that "
            "runs edge (SSH_AUTH_SOCK set), and edge signs with the agent's copy")


def check_identity(t) -> str | None:
    """The key file to hand paramiko: None when it is passphrase-protected and ssh-agent holds it.

    An unreadable or missing key file, or a passphrase-protected one the agent lacks, is an
    AuthError that says so (never "cannot connect" or "not in authorized_keys").
    """
    if t.identity_file is None:
        return None
    path = Path(t.identity_file)
    where = f"target '{t.name}' ({t.user}@{t.host}:{t.port})"
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise AuthError(f"{where}: identity_file {path} does not exist; expected a private key "
                        "file (set identity_file in the target, or remove it to use ssh-agent "
                        "and the default keys)") from None
    except OSError as exc:
        raise AuthError(f"{where}: cannot read identity_file {path} ({exc.strerror}); make it "
                        "readable by the user running edge (chmod 600, owned by that user)") from None
    try:
        paramiko.PKey.from_path(path)
        return str(path)
    except paramiko.PasswordRequiredException:
        pass
    except (paramiko.SSHException, ValueError, TypeError) as exc:
        if b"PRIVATE KEY" not in text:
            raise AuthError(f"{where}: identity_file {path} is not a private key file "
                            f"({type(exc).__name__}); point it at the private half (not .pub)") from None
        return str(path)  # a key type paramiko parses only while connecting: let it try
    public = _public_blob(path)
    agent_keys = [k.asbytes() for k in paramiko.Agent().get_keys()]
    if public is not None and public in agent_keys:
        log.debug("%s: %s is passphrase-protected; using ssh-agent's copy", t.name, path)
        return None
    if public is None and agent_keys:
        return None  # no .pub beside it to match: let the agent's keys try
    raise AuthError(passphrase_message(where, str(path)))


def _public_blob(private: Path) -> bytes | None:
    """The public key blob from ``KEY.pub`` beside the private key, if there is one."""
    try:
        fields = Path(f"{private}.pub").read_text().split()
        return base64.b64decode(fields[1]) if len(fields) >= 2 else None
    except (OSError, ValueError):
        return None


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse unknown hosts, or record them when the user asked to trust new hosts."""

    def __init__(self, known_hosts: Path, trust: bool, target_name: str):
        self.known_hosts, self.trust, self.target_name = known_hosts, trust, target_name

    def missing_host_key(self, client, hostname, key):
        fingerprint = key.fingerprint
        if not self.trust:
            raise HostKeyError(
                f"target '{self.target_name}': host {hostname} is not in {self.known_hosts} "
                f"({key.get_name()} {fingerprint}). Check the fingerprint on the device "
                f"(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then re-run with "
                f"--trust-new-host to record it, or add it with `ssh-keyscan`"
            )
        append_known_host(self.known_hosts, f"{hostname} {key.get_name()} {key.get_base64()}")
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning("target '%s': trusted new host key %s %s for %s (recorded in %s)",
                    self.target_name, key.get_name(), fingerprint, hostname, self.known_hosts)
