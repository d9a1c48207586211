"""The event outbox on the filesystem: one append-only segment a process, read by other
processes as it grows, whole records only, and removed only once its writer is gone
(a real kill -9 included)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import storage.outbox
from storage.filesystem import FilesystemDriver
from storage.outbox import Outbox, OutboxFullError


def event(number: int) -> dict[str, object]:
    return {"id": f"e{number}", "action": "pull", "target": {"repository": "x"}}


def cut_off_record(segment: Path) -> None:
    """Append the start of a record, as a writer killed in the middle of one leaves it."""
    with open(segment, "ab") as file:
        file.write(b'1 [{"id": "cut')


async def stored_ids(outbox: Outbox) -> list[str]:
    """Event ids of the whole records, in the order of the segments and records."""
    ids = []
    for name, _ in await outbox.segments():
        for record in (await outbox.read(name)).records:
            ids += [e["id"] for e in record.events()]
    return ids


@pytest.mark.parametrize("sync_before_answer", [False, True])
async def test_records_go_to_one_segment_another_process_reads_whole_records_only(
    tmp_path: Path, sync_before_answer: bool
) -> None:
    writer = Outbox(FilesystemDriver(tmp_path), 10, sync_before_answer)
    reader = Outbox(FilesystemDriver(tmp_path), 10)  # another process's view
    await writer.append([event(1), event(2)])
    await writer.append([event(3)])
    [(name, size)] = await reader.segments()
    segment = await reader.read(name)
    assert [r.count for r in segment.records] == [2, 1]
    assert await stored_ids(reader) == ["e1", "e2", "e3"]
    assert segment.end == size and segment.records[0].id < segment.records[1].id
    # A record cut off (a crash mid-write) is not read; the records before it are.
    cut_off_record(tmp_path / "_events" / "outbox" / name)
    assert await stored_ids(reader) == ["e1", "e2", "e3"]
    # Read on from where the first record ends: the rest.
    rest = await reader.read(name, int(segment.records[0].id.rsplit(":", 1)[1]))
    assert [r.count for r in rest.records] == [1]
    await writer.close()


async def test_a_full_segment_makes_another_and_at_the_bound_events_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage.outbox, "SEGMENT_BYTES", 100)
    outbox = Outbox(FilesystemDriver(tmp_path), 2)
    await outbox.append([event(1), event(2)])  # past 100 bytes: the next starts another
    await outbox.append([event(3)])
    await outbox.append([event(4)])  # the second segment has room for it
    assert len(await outbox.segments()) == 2
    with pytest.raises(OutboxFullError):
        await outbox.append([event(5)])  # a third segment: past the bound
    assert await stored_ids(outbox) == ["e1", "e2", "e3", "e4"]
    await outbox.close()


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from storage.filesystem import FilesystemDriver
    from storage.outbox import Outbox

    async def main() -> None:
        outbox = Outbox(FilesystemDriver(sys.argv[1]), 10, sys.argv[2] == "sync")
        for number in range(1_000_000):
            await outbox.append([{"id": f"e{number}", "action": "pull"}])
            print(number, flush=True)  # answered: the event must be delivered later
            if number == 199:
                sys.stdin.readline()  # alive, writing nothing until told to go on

    asyncio.run(main())
    """
)


def start_writer(root: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )


@pytest.mark.parametrize("mode", ["sync", "background"])
async def test_every_answered_record_outlives_kill_9_and_only_a_dead_writers_segment_goes(
    tmp_path: Path, mode: str
) -> None:
    child = start_writer(tmp_path, mode)
    assert child.stdin is not None and child.stdout is not None
    outbox = Outbox(FilesystemDriver(tmp_path), 10)
    try:
        for _ in range(200):
            child.stdout.readline()
        # Every record taken, nothing written since, but the writer lives: it stays.
        [(name, size)] = await outbox.segments()
        assert not await outbox.remove(name, size), "removed under its live writer"
        child.stdin.write("go on\n")
        child.stdin.flush()
        for _ in range(100):  # writing again: killed in the middle of it
            child.stdout.readline()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    answered = [line for line in child.stdout.read().splitlines() if line]
    last = int(answered[-1]) if answered else 199
    ids = await stored_ids(outbox)
    assert ids[: last + 1] == [f"e{n}" for n in range(last + 1)]
    [(name, size)] = await outbox.segments()
    assert await outbox.remove(name, size)
    assert await outbox.segments() == []


async def test_a_segment_that_grew_since_it_was_read_is_not_removed(tmp_path: Path) -> None:
    writer = Outbox(FilesystemDriver(tmp_path), 10)
    await writer.append([event(1)])
    [(name, size)] = await writer.segments()
    await writer.append([event(2)])
    await writer.close()
    assert not await writer.remove(name, size)
    [(name, size)] = await writer.segments()
    assert await writer.remove(name, size)


def test_the_record_line_is_a_count_and_a_json_list() -> None:
    line = storage.outbox.encode([event(1), event(2)])
    count, _, raw = line.rstrip(b"\n").partition(b" ")
    assert line.endswith(b"\n") and count == b"2"
    assert json.loads(raw) == [event(1), event(2)]
