"""One small exception tree. Every user-facing failure is an :class:`EdgeError`.

Messages say what was expected, what was found and what to do. The CLI prints
``str(error)`` without a traceback and exits with ``error.exit_code``.

Exit codes (documented in the README):

====  =========================================================
 0    success
 1    unexpected internal error (a bug: run with --debug)
 2    bad input: usage, profile, target, plan or config schema
 3    model could not be loaded
 4    export or conversion failed
 5    validation against the eager model failed
 6    no plan satisfies the constraints
 7    device transport failure (connect, auth, host key, timeout), or provisioning a device failed
 8    on-device runner failure
 9    results store or report failure
10    partial success (some backends of a compare failed)
====  =========================================================
"""
from __future__ import annotations


class EdgeError(Exception):
    """Base of every user-facing failure."""

    exit_code = 1


class ConfigError(EdgeError):
    """A profile, target, plan or option is malformed or inconsistent."""

    exit_code = 2


class ModelLoadError(EdgeError):
    """A model name, file or directory could not be turned into a model."""

    exit_code = 3


class ExportError(EdgeError):
    """A backend could not convert the model."""

    exit_code = 4


class UnsupportedError(ExportError):
    """A backend cannot express a construct or technique (known before trying)."""


class ValidationError(EdgeError):
    """An exported artifact disagrees with the eager model beyond tolerance."""

    exit_code = 5


class NoFeasiblePlanError(EdgeError):
    """No combination of techniques and backends meets the constraints."""

    exit_code = 6


class TransportError(EdgeError):
    """A device could not be reached or a command on it failed."""

    exit_code = 7


class HostKeyError(TransportError):
    """The device's host key is unknown or has changed."""


class AuthError(TransportError):
    """The device refused the credentials."""


class ConnectError(TransportError):
    """The device did not accept a connection."""


class CommandTimeoutError(TransportError):
    """A command on the device ran past its timeout."""


class RemoteCommandError(TransportError):
    """A command on the device exited non-zero."""


class DeviceFullError(TransportError):
    """The device has too little free space for a file edge pushes."""


class DeviceBusyError(TransportError):
    """Another bench holds the device's bench lock and did not let go within the wait."""


class ProvisionError(TransportError):
    """A device could not be provisioned: no wheels for its platform, an installer that failed."""


class RunnerError(EdgeError):
    """The on-device runner failed or printed something unparseable."""

    exit_code = 8


class OutOfMemoryError(RunnerError):
    """The device's out-of-memory killer (or its memory cgroup) stopped a command."""


class ResultsError(EdgeError):
    """The results store or a report could not be read or written."""

    exit_code = 9


class PartialFailure(EdgeError):
    """Some, not all, of the requested work failed (e.g. one backend of a compare)."""

    exit_code = 10


class CalibrationNoiseError(EdgeError):
    """A calibration's repeated probe timings disagree too much to write as numbers."""

    exit_code = 11


def first_line(error: BaseException | str | None, limit: int = 300, with_type: bool = False) -> str:
    """The first non-empty line of an error (or text), cut to ``limit`` characters with "...".

    ``with_type`` prefixes an exception's class name (``ValueError: ...``); an exception with
    no message is described by its class name alone.
    """
    if error is None:
        return ""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    if isinstance(error, BaseException) and (with_type or not text):
        return f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text
