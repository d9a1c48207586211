"""The filesystem driver's atomicity: a failure at any point leaves the old state or the new."""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from storage import filesystem, nowait
from storage.driver import READ_CHUNK, PathNotFoundError
from storage.filesystem import FilesystemDriver


def leftovers(root: Path) -> list[str]:
    return [p.name for p in root.rglob(".tmp-*")]


async def test_put_replaces_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = FilesystemDriver(tmp_path)
    await driver.put("a/b", b"old")

    def crash(*args: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        await driver.put("a/b", b"new")
    assert await driver.get("a/b") == b"old"
    assert leftovers(tmp_path) == []


async def test_writer_commit_failure_keeps_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = FilesystemDriver(tmp_path)
    writer = await driver.writer("uploads/x/data")
    await writer.write(b"partial")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("crash")))
    with pytest.raises(OSError, match="crash"):
        await writer.commit("blobs/final")
    with pytest.raises(PathNotFoundError):
        await driver.get("blobs/final")
    # What was written survives for a retry.
    assert await driver.get("uploads/x/data") == b"partial"


async def test_writer_resumes_in_another_driver_instance(tmp_path: Path) -> None:
    writer = await FilesystemDriver(tmp_path).writer("up/data")
    await writer.write(b"abc")
    await writer.close()
    other = await FilesystemDriver(tmp_path).writer("up/data", append=True)
    assert other.size == 3
    await other.write(b"def")
    await other.commit("done")
    assert await FilesystemDriver(tmp_path).get("done") == b"abcdef"
    assert not (tmp_path / "up" / "data").exists()


async def test_listing_hides_temporary_files(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    await driver.put("dir/one", b"1")
    (tmp_path / "dir" / ".tmp-abc").write_bytes(b"in flight")
    assert await driver.list("dir") == ["one"]


async def test_reader_ranges(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    data = os.urandom(3 << 20)
    await driver.put("blob", data)
    assert b"".join([c async for c in driver.reader("blob", 5, 100)]) == data[5:105]
    assert b"".join([c async for c in driver.reader("blob", (3 << 20) - 10)]) == data[-10:]
    with pytest.raises(PathNotFoundError):
        [c async for c in driver.reader("missing")]


async def test_delete_missing_is_not_an_error(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    await driver.delete("nothing/here")
    assert await driver.list("nothing") == []


async def read_all(
    driver: FilesystemDriver, key: str, offset: int = 0, length: int | None = None
) -> bytes:
    return b"".join([chunk async for chunk in driver.reader(key, offset, length)])


async def test_cached_reads_skip_the_thread_and_uncached_ones_take_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = FilesystemDriver(tmp_path)
    data = os.urandom(READ_CHUNK * 3 + 5)
    await driver.put("blob", data)  # just written: in the page cache
    blocking_reads: list[int] = []
    real_pread = os.pread

    def counted_pread(fd: int, size: int, offset: int) -> bytes:
        blocking_reads.append(offset)
        return real_pread(fd, size, offset)

    monkeypatch.setattr(os, "pread", counted_pread)
    assert await read_all(driver, "blob") == data
    assert await read_all(driver, "blob", 7, READ_CHUNK) == data[7 : 7 + READ_CHUNK]
    # Only the end of the whole-blob read (0 bytes cached past it) needs the blocking read.
    assert blocking_reads == [len(data)]

    def nothing_cached(*args: object) -> int:
        raise BlockingIOError

    blocking_reads.clear()
    monkeypatch.setattr(os, "preadv", nothing_cached)
    assert await read_all(driver, "blob", 1) == data[1:]
    assert len(blocking_reads) == 5  # 4 pieces and the end


async def test_a_cached_file_is_opened_for_reading_without_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = FilesystemDriver(tmp_path)
    data = os.urandom(2048)  # a config blob's size
    await driver.put("blob", data)
    opened: list[object] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda *args: (opened.append(args[0]), real_open(*args))[1])
    assert await read_all(driver, "blob", 0, len(data)) == data
    assert opened == []
    with pytest.raises(PathNotFoundError):  # (its thread learns it when no cache knows)
        await read_all(driver, "missing")

    opened.clear()
    monkeypatch.setattr(nowait, "open_cached", lambda path: None)  # not in the caches
    assert await read_all(driver, "blob", 0, len(data)) == data
    assert opened == [tmp_path / "blob"]


async def test_a_cancelled_read_closes_the_file_only_after_its_thread_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = FilesystemDriver(tmp_path)
    await driver.put("blob", os.urandom(1000))
    started, release = threading.Event(), threading.Event()
    open_when_read: list[bool] = []
    real_pread = os.pread

    def slow_pread(fd: int, size: int, offset: int) -> bytes:
        started.set()
        release.wait(timeout=30)
        open_when_read.append(os.fstat(fd) is not None)  # raises if closed under us
        return real_pread(fd, size, offset)

    def nothing_cached(*args: object) -> int:
        raise BlockingIOError

    monkeypatch.setattr(os, "preadv", nothing_cached)
    monkeypatch.setattr(os, "pread", slow_pread)

    async def consume() -> None:
        async for _ in driver.reader("blob"):
            pass

    reading = asyncio.create_task(consume())
    await asyncio.to_thread(started.wait, 30)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    release.set()
    for _ in range(300):  # bounded wait for the released thread to record what it saw
        if open_when_read:
            break
        await asyncio.sleep(0.01)
    assert open_when_read == [True]


async def test_delete_then_unlinks_in_order_and_removes_each_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector's tombs go after what they cover, in one pass: a blob's folder
    (holding its data and its tomb until both go) is removed by one rmdir, not two."""
    driver = FilesystemDriver(tmp_path)
    for key in ("blobs/sha256/ab/abc/data", "blobs/sha256/ab/abc/tomb-1", "r/_layers/abc/link"):
        await driver.put(key, b"")
    unlinked: list[str] = []
    removed: list[str] = []
    unlink, rmdir = os.unlink, os.rmdir
    monkeypatch.setattr(os, "unlink", lambda path: (unlinked.append(path), unlink(path)))
    monkeypatch.setattr(os, "rmdir", lambda path: (removed.append(path), rmdir(path)))
    await driver.delete_then(
        [(["r/_layers/abc/link", "blobs/sha256/ab/abc/data"], ["blobs/sha256/ab/abc/tomb-1"])]
    )
    assert [Path(path).name for path in unlinked] == ["link", "data", "tomb-1"]
    assert removed.count(str(tmp_path / "blobs/sha256/ab/abc")) == 1
    assert not (tmp_path / "blobs/sha256/ab/abc").exists()


async def test_a_folder_above_that_still_holds_folders_is_not_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repository's `_layers/<alg>` is left without an rmdir while other links'
    folders are in it, and removed with the last of them."""
    driver = FilesystemDriver(tmp_path)
    for key in ("r/_layers/sha256/abc/link", "r/_layers/sha256/def/link"):
        await driver.put(key, b"")
    removed: list[str] = []
    rmdir = os.rmdir
    monkeypatch.setattr(os, "rmdir", lambda path: (removed.append(path), rmdir(path)))
    layers = tmp_path / "r/_layers/sha256"
    await driver.delete_then([(["r/_layers/sha256/abc/link"], [])])
    assert removed == [f"{layers}/abc"]
    await driver.delete_then([(["r/_layers/sha256/def/link"], [])])
    assert removed[1:] == [f"{layers}/def", str(layers)]
    assert not layers.exists()


def _sweep_batch(root: Path, blobs: list[str]) -> list[tuple[list[str], list[str]]]:
    """A sweep's batch as the collector hands it over: each blob's link and data, then
    its tomb; the files made below `root`."""
    groups = []
    for hex_ in blobs:
        blob = f"blobs/sha256/{hex_[:2]}/{hex_}"
        for key in (f"{blob}/data", f"{blob}/tomb-1", f"r/_layers/sha256/{hex_}"):
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(b"x")
        groups.append(([f"r/_layers/sha256/{hex_}", f"{blob}/data"], [f"{blob}/tomb-1"]))
    return groups


def _left(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


async def test_a_large_delete_then_runs_in_other_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep's batch is deleted by helper processes (threads of this one would hand
    its interpreter lock over around every system call): nothing of it in this process."""
    groups = _sweep_batch(tmp_path, [f"{n:064x}" for n in range(200)])

    def refuse(path: str) -> None:
        raise AssertionError(f"{path} deleted in the server's own process")

    monkeypatch.setattr(os, "unlink", refuse)
    monkeypatch.setattr(os, "rmdir", refuse)
    await FilesystemDriver(tmp_path).delete_then(groups)
    assert _left(tmp_path) == ["blobs", "blobs/sha256", "r", "r/_layers"]


def test_each_share_of_a_batch_keeps_each_groups_order_and_removes_each_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What each deleting process runs on its share: each blob's tomb after its data and
    link, each folder emptied removed once."""
    blobs = [f"{n:064x}" for n in range(200)]
    groups = _sweep_batch(tmp_path, blobs)
    unlinked: list[str] = []
    removed: list[str] = []
    unlink, rmdir = os.unlink, os.rmdir
    monkeypatch.setattr(os, "unlink", lambda path: (unlink(path), unlinked.append(path)))
    monkeypatch.setattr(os, "rmdir", lambda path: (removed.append(path), rmdir(path)))
    filesystem._delete_groups(
        tmp_path,
        [
            ([str(tmp_path / k) for k in keys], [str(tmp_path / k) for k in after])
            for keys, after in groups
        ],
    )
    assert len(unlinked) == 600
    for hex_ in blobs:
        blob = tmp_path / f"blobs/sha256/{hex_[:2]}/{hex_}"
        tomb = unlinked.index(str(blob / "tomb-1"))
        assert unlinked.index(str(blob / "data")) < tomb
        assert unlinked.index(str(tmp_path / f"r/_layers/sha256/{hex_}")) < tomb
        assert removed.count(str(blob)) == 1
    assert removed.count(str(tmp_path / "r/_layers/sha256")) == 1
    assert _left(tmp_path) == ["blobs", "blobs/sha256", "r", "r/_layers"]


async def test_deleting_processes_killed_leave_their_batch_to_a_thread(tmp_path: Path) -> None:
    """A batch given to deleting processes that were killed is deleted all the same, and
    the next batch gets new processes."""
    pool = filesystem._deleting()
    pids = {pool.submit(os.getpid).result() for _ in range(20)}
    assert os.getpid() not in pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    driver = FilesystemDriver(tmp_path)
    await driver.delete_then(_sweep_batch(tmp_path, [f"{n:064x}" for n in range(100)]))
    assert _left(tmp_path) == ["blobs", "blobs/sha256", "r", "r/_layers"]
    assert filesystem._deleting() is not pool
    await driver.delete_then(_sweep_batch(tmp_path, [f"{n:064x}" for n in range(100, 200)]))
    assert _left(tmp_path) == ["blobs", "blobs/sha256", "r", "r/_layers"]


async def test_deleting_processes_that_cannot_start_leave_their_batch_to_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where processes cannot start (a container without /dev/shm fails their
    semaphores), a large batch is deleted all the same."""

    @functools.cache
    def no_processes() -> ProcessPoolExecutor:
        raise OSError(errno.ENOSYS, "sem_open")

    monkeypatch.setattr(filesystem, "_deleting", no_processes)
    await FilesystemDriver(tmp_path).delete_then(
        _sweep_batch(tmp_path, [f"{n:064x}" for n in range(100)])
    )
    assert _left(tmp_path) == ["blobs", "blobs/sha256", "r", "r/_layers"]


async def test_a_deletion_that_fails_in_a_deleting_process_fails_and_keeps_the_processes(
    tmp_path: Path,
) -> None:
    """A real failure (a key that is a folder) is raised, by the thread that tries the
    batch again; the deleting processes, not broken, stay for the next batch."""
    groups = _sweep_batch(tmp_path, [f"{n:064x}" for n in range(100)])
    (tmp_path / "a-folder").mkdir()
    pool = filesystem._deleting()
    with pytest.raises(IsADirectoryError):
        await FilesystemDriver(tmp_path).delete_then([(["a-folder"], []), *groups])
    assert filesystem._deleting() is pool


async def test_put_visible_does_not_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = FilesystemDriver(tmp_path)
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    await driver.put_visible("r/_summary", b"{}")
    assert synced == []
    await driver.put("r/_summary", b"{}")
    assert synced  # `put` does
    assert leftovers(tmp_path) == []


async def test_a_batch_of_markers_takes_one_inode(tmp_path: Path) -> None:
    """The collector's tombs: hard links to one empty file, not an inode each (ext4's
    search for a free inode among many just freed was most of a sweep's kernel time)."""
    driver = FilesystemDriver(tmp_path)
    await driver.put("m/b/tomb-1", b"was here")
    keys = ["m/a/tomb-1", "m/b/tomb-1", "m/c/deeper/tomb-1", "m/d/tomb-1"]
    await driver.put_markers(keys)
    inodes = {(tmp_path / key).stat().st_ino for key in keys}
    assert len(inodes) == 2  # the one that was there is emptied in place
    assert all((tmp_path / key).read_bytes() == b"" for key in keys)
    await driver.delete_many(keys[:2])
    assert (tmp_path / keys[2]).stat().st_nlink == 2  # the others keep the file
