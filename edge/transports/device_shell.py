"""The POSIX sh snippets every transport runs on a device, and the parsers of what they print.

They need only a Bourne shell and the tools a busybox or Android toybox device has; each
takes its inputs as positional arguments (``sh -c SCRIPT sh ARG...``), never interpolated.
"""
from __future__ import annotations

import re
import signal
from dataclasses import dataclass

# sha256 of "$1": prints "<hex> <tool>". The device's Python first (hashlib uses OpenSSL,
# several times faster than coreutils), then sha256sum, busybox, toybox, openssl. Exit 4
# when no tool works.
HASH_TOOLS = ("python", "sha256sum", "busybox sha256sum", "toybox sha256sum", "openssl")
_HASH_FN = (
    'h() { if command -v "$PY" >/dev/null 2>&1; then d=$("$PY" -S -c "import hashlib,sys; '
    'x=hashlib.sha256(); f=open(sys.argv[1],\'rb\'); '
    '[x.update(b) for b in iter(lambda: f.read(1<<20), b\'\')]; print(x.hexdigest())" "$1" '
    '2>/dev/null) && [ -n "$d" ] && { echo "$d python"; return 0; }; fi; '
    'for t in sha256sum "busybox sha256sum" "toybox sha256sum"; do '
    'd=$($t "$1" 2>/dev/null) && [ -n "$d" ] && { echo "${d%% *} $t"; return 0; }; done; '
    'd=$(openssl dgst -sha256 -r "$1" 2>/dev/null) && [ -n "$d" ] && '
    '{ echo "${d%% *} openssl"; return 0; }; echo "no-sha256-tool"; return 4; }; '
)
# $1 = path, $2 = python. Prints "<hex> <tool>", or "-" when there is no such file.
SHA_SCRIPT = _HASH_FN + 'PY=$2; if [ -f "$1" ]; then h "$1"; else echo -; fi'

# $1 = temp path, $2 = final path, $3 = expected sha256, $4 = python. Renames only on a
# match. A temp file already gone while the final path holds the expected bytes means a
# concurrent push of the same file committed first: success. Partial uploads of this
# destination untouched for 10 minutes (earlier, abandoned versions) are removed.
COMMIT_SCRIPT = _HASH_FN + (
    'PY=$4; F=$2; S=$3; final_ok() { r=$(h "$F") && [ "${r%% *}" = "$S" ]; }; '
    'if [ ! -f "$1" ]; then final_ok && exit 0; '
    'echo "temporary file $1 vanished before it was verified" >&2; exit 3; fi; '
    'r=$(h "$1") || { final_ok && exit 0; [ -f "$1" ] || { echo "temporary file $1 vanished" >&2; '
    'exit 3; }; echo "no sha256 tool on the device (tried: python, sha256sum, busybox, toybox, '
    'openssl)" >&2; exit 4; }; '
    'd=${r%% *}; if [ "$d" = "$3" ]; then mv -f "$1" "$2" 2>/dev/null || final_ok || '
    '{ echo "cannot rename $1 to $2" >&2; exit 5; }; '
    'find "$(dirname "$2")" -maxdepth 1 -name "$(basename "$2").part-*" -mmin +10 '
    '-exec rm -f {} \\; 2>/dev/null; echo "${r#* }"; '
    'else rm -f "$1"; echo "sha256 mismatch: expected $3, device has $d" >&2; exit 3; fi'
)

# $1 = directory. Creates it, then prints the free bytes there ("?" when df cannot say).
FREE_SCRIPT = (
    'mkdir -p "$1" || exit 2; '
    'k=$( (df -Pk "$1" 2>/dev/null || df -k "$1" 2>/dev/null) | tail -n 1 | '
    'awk \'{print $4}\'); case "$k" in ""|*[!0-9]*) echo "?";; *) echo $((k * 1024));; esac'
)

# Runs "$@" under the device's `timeout` (when it has one) so a command the host gave up
# on does not keep running there ($0 = seconds). When the command dies of a signal, one
# last stderr line says which, with the memory cgroup's OOM-kill count before and after
# and its limit: SSH servers report a signal in a message paramiko drops.
KILLED_MARKER = "edge-killed:"
TIMEOUT_WRAPPER = (
    'c=/sys/fs/cgroup; p=$(sed -n "s/^[0-9]*:[^:]*memory[^:]*://p" /proc/self/cgroup '
    '2>/dev/null | head -n 1); if [ -n "$p" ]; then g=$c/memory$p; '
    'else g=$c$(sed -n "s/^0:://p" /proc/self/cgroup 2>/dev/null | head -n 1); fi; '
    'o() { cat "$g/memory.oom_control" "$g/memory.events" 2>/dev/null | '
    'sed -n "s/^oom_kill //p" | head -n 1; }; b=$(o); '
    'if command -v timeout >/dev/null 2>&1; then timeout -s KILL "$0" "$@"; else "$@"; fi; '
    'r=$?; if [ $r -gt 128 ]; then a=$(o); '
    'l=$(cat "$g/memory.limit_in_bytes" "$g/memory.max" 2>/dev/null | head -n 1); '
    f'echo "{KILLED_MARKER} signal=$((r - 128)) oom_before=${{b:--}} oom_after=${{a:--}} '
    'limit=${l:--}" >&2; fi; exit $r'
)
_MARKER_RE = re.compile(rf"^{KILLED_MARKER} signal=(\d+) oom_before=(\S+) oom_after=(\S+) "
                        r"limit=(\S+)\s*$", re.M)
# cgroup v1 reports "no limit" as a huge page-aligned number
_UNLIMITED_BYTES = 1 << 60


@dataclass(frozen=True)
class Killed:
    """What the wrapper said about a command that died of a signal."""

    signal: int
    oom_killed: bool | None  # None: the device exposes no OOM-kill count
    limit_bytes: int | None

    def describe(self) -> str:
        try:
            name = signal.Signals(self.signal).name
        except ValueError:
            name = f"signal {self.signal}"
        if self.oom_killed:
            return f"killed by {name}: out of memory{self.limit_text()}"
        if self.signal == signal.SIGKILL:
            return (f"killed by {name} (the out-of-memory killer, a timeout or a kill -9; the "
                    f"device showed no OOM kill in its memory cgroup{self.limit_text()})")
        return f"killed by {name}"

    def limit_text(self) -> str:
        if self.limit_bytes is None:
            return ""
        return f", memory limit {self.limit_bytes / 1e6:.0f} MB"


def split_killed(stderr: str) -> tuple[str, Killed | None]:
    """The stderr without the wrapper's last line, and what that line said (None if absent)."""
    matches = list(_MARKER_RE.finditer(stderr))
    if not matches:
        return stderr, None
    m = matches[-1]
    sig, before, after, limit = m.groups()
    oom = int(after) > int(before) if before.isdigit() and after.isdigit() else None
    limit_bytes = int(limit) if limit.isdigit() and int(limit) < _UNLIMITED_BYTES else None
    return stderr[:m.start()] + stderr[m.end():].lstrip("\n"), Killed(int(sig), oom, limit_bytes)


def parse_sha(out: str) -> tuple[str | None, str | None]:
    """(sha256, tool) from SHA_SCRIPT's output; (None, None) for an absent file."""
    text = out.strip()
    if text == "-":
        return None, None
    digest, _, tool = text.partition(" ")
    if re.fullmatch(r"[0-9a-f]{64}", digest):
        return digest, tool or None
    return "", None


def parse_free(out: str) -> int | None:
    """Free bytes from FREE_SCRIPT's output, None when the device cannot say."""
    text = out.strip().splitlines()[-1:] if out.strip() else []
    return int(text[0]) if text and text[0].isdigit() else None
