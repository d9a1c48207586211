"""The test launcher itself: a server started before `with` is the one `with` stops."""

from __future__ import annotations

from pathlib import Path

from tests.support.server import RegistryProcess


def test_started_server_is_not_started_twice(tmp_path: Path) -> None:
    server = RegistryProcess(tmp_path).start()
    first = server.process
    assert first is not None
    with server as entered:
        assert entered.process is first
    assert first.poll() is not None  # stopped, not orphaned
