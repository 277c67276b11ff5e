"""LocalTransport: the same contract on this machine."""
from __future__ import annotations

import dataclasses

import pytest

from edge.errors import CommandTimeoutError, RemoteCommandError
from edge.targets import local_target
from edge.transports import connect
from labtools import process_running


@pytest.fixture
def local(tmp_path):
    with connect(dataclasses.replace(local_target(), workdir=str(tmp_path / "work"))) as tr:
        yield tr


def test_put_skip_and_get(local, tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 5000)
    dest = str(tmp_path / "work" / "deep" / "a.bin")
    first, second = local.put(src, dest), local.put(src, dest)
    assert (first.skipped, first.bytes_sent) == (False, 5000)
    assert (second.skipped, second.bytes_sent) == (True, 0)
    assert [p.name for p in (tmp_path / "work" / "deep").iterdir()] == ["a.bin"]
    assert local.get(dest, tmp_path / "b.bin").read_bytes() == src.read_bytes()


def test_run_check_and_timeout(local):
    assert local.run(["echo", "hi"], timeout_s=10).stdout == "hi\n"
    with pytest.raises(RemoteCommandError, match="exited 4"):
        local.run(["sh", "-c", "exit 4"], timeout_s=10)
    with pytest.raises(CommandTimeoutError):
        local.run(["sleep", "20.25"], timeout_s=0.5)
    assert not process_running("sleep 20.25", exact=True)
