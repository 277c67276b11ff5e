"""How much of this machine edge's own computation uses (export, validation, planning).

torch defaults to one intra-op thread per core. On a small shared host that collapses: with
two OpenMP threads on a two-core machine that runs another busy job, a 31-step sampling loop
took 74 s instead of 4 s (threads spin-wait for a core). edge therefore uses half the cores
(at least one) unless told otherwise: ``--host-threads N`` or ``$EDGE_HOST_THREADS``. This is
the host's setting only; what a device runs with is ``--threads`` of bench/compare.
"""
from __future__ import annotations

import os

from .errors import ConfigError

ENV = "EDGE_HOST_THREADS"
_configured: list[int] = []


def host_threads() -> int:
    """``$EDGE_HOST_THREADS``, else half of this machine's cores (at least one)."""
    value = os.environ.get(ENV)
    if value is None:
        return max(1, (os.cpu_count() or 2) // 2)
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"expected {ENV} (or --host-threads) to be a whole number >= 1, found {value!r}")
    return int(value)


def configure_torch() -> int:
    """Set torch's intra-op threads to :func:`host_threads` (once per process; torch already loaded)."""
    threads = host_threads()
    if _configured != [threads]:
        import torch

        torch.set_num_threads(threads)
        _configured[:] = [threads]
    return threads
