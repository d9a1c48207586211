"""A server's scratch directories: those of servers killed outright go when the next
one starts (registry/scratch_dirs.py)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.scratch_dirs import remove_dead, scratch_directory


@pytest.fixture
def temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


@pytest.fixture
def running() -> Iterator[int]:
    """The PID of a process alive throughout the test."""
    process = subprocess.Popen(["sleep", "60"])
    yield process.pid
    process.kill()
    process.wait()


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_the_directories_of_gone_servers_are_removed_and_no_other(temp: Path, running: int) -> None:
    dead = temp / f"dockyard-metrics-{dead_pid()}-x1"
    predecessor = temp / f"dockyard-metrics-{os.getpid()}-x2"  # a restarted container's PID 1
    alive = temp / f"dockyard-metrics-{running}-x3"
    other_kind = temp / f"dockyard-throttle-{dead_pid()}-x4"
    unnamed = temp / "dockyard-metrics-abc123"  # not a server's name
    for directory in (dead, predecessor, alive, other_kind, unnamed):
        directory.mkdir()
        (directory / "worker-1.json").write_text("{}")
    a_file = temp / f"dockyard-metrics-{dead_pid()}-x5"
    a_file.write_text("")
    assert sorted(remove_dead("metrics")) == sorted([str(dead), str(predecessor)])
    assert sorted(path.name for path in temp.iterdir()) == sorted(
        path.name for path in (alive, other_kind, unnamed, a_file)
    )


def test_a_server_names_its_own_after_itself_and_removes_it_at_exit(temp: Path) -> None:
    stale = temp / f"dockyard-throttle-{dead_pid()}-x1"
    stale.mkdir()
    with scratch_directory("throttle") as directory:
        assert Path(directory).parent == temp
        assert Path(directory).name.startswith(f"dockyard-throttle-{os.getpid()}-")
        assert [path.name for path in temp.iterdir()] == [Path(directory).name]
    assert list(temp.iterdir()) == []
