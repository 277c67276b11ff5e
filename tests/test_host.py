"""edge.host: the thread count edge's own computation uses."""
import pytest
import torch

from edge.cli import main
from edge.errors import ConfigError
from edge.host import configure_torch, host_threads


def test_host_threads_default_is_half_the_cores_and_the_env_wins(monkeypatch):
    import os

    monkeypatch.delenv("EDGE_HOST_THREADS")
    assert host_threads() == max(1, (os.cpu_count() or 2) // 2)
    monkeypatch.setenv("EDGE_HOST_THREADS", "3")
    assert host_threads() == 3 and configure_torch() == 3 and torch.get_num_threads() == 3
    monkeypatch.setenv("EDGE_HOST_THREADS", "0")
    with pytest.raises(ConfigError, match="EDGE_HOST_THREADS"):
        host_threads()
    monkeypatch.setenv("EDGE_HOST_THREADS", "1")
    assert configure_torch() == 1 and torch.get_num_threads() == 1


def test_cli_host_threads_option_sets_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("EDGE_HOST_THREADS", "1")
    assert main(["--host-threads", "1", "models", "show", "tiny-mlp"]) == 0
    assert main(["--host-threads", "0", "models", "list"]) == 2
    assert "expected --host-threads >= 1" in capsys.readouterr().err
