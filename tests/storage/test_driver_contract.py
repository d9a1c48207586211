"""The contract of `storage.driver` that every driver keeps, run against each of them."""

from __future__ import annotations

import asyncio
import itertools
import os

import pytest

from storage.driver import (
    InvalidKeyError,
    KeyConflictError,
    PathNotFoundError,
    StorageDriver,
    WriterBusyError,
)
from storage.filesystem import FilesystemDriver
from tests.support.drivers import twin


async def read(
    driver: StorageDriver, key: str, offset: int = 0, length: int | None = None
) -> bytes:
    return b"".join([chunk async for chunk in driver.reader(key, offset, length)])


async def test_put_get_replace_stat(driver: StorageDriver) -> None:
    await driver.put("a/b/c", b"first")
    await driver.put("a/b/c", b"second!")
    assert await driver.get("a/b/c") == b"second!"
    assert (await driver.stat("a/b/c")).size == 7
    assert await driver.exists("a/b/c")
    assert not await driver.exists("a/b/missing")
    with pytest.raises(PathNotFoundError):
        await driver.get("a/b/missing")


async def test_an_object_where_a_folder_is_is_stored_beside_it_or_refused(
    driver: StorageDriver,
) -> None:
    """Where the storage has real folders (the filesystem) a key cannot be an object
    and hold others: `KeyConflictError`, nothing lost; elsewhere both are stored."""
    await driver.put("a/b/c", b"below")
    try:
        await driver.put("a/b", b"above")
    except KeyConflictError:
        assert isinstance(driver, FilesystemDriver)
    else:
        assert await driver.get("a/b") == b"above"
    assert await driver.get("a/b/c") == b"below"


async def test_a_folder_of_other_keys_is_no_object(driver: StorageDriver) -> None:
    """`exists` answers for objects only: a blob link's older shape, a folder holding
    `link`, must not read as its newer shape, an object at the folder's name."""
    await driver.put("a/b/c", b"below")
    assert not await driver.exists("a/b")


async def test_reader_ranges(driver: StorageDriver) -> None:
    data = os.urandom(3 << 20)
    await driver.put("blob", data)
    assert await read(driver, "blob") == data
    assert await read(driver, "blob", 1000) == data[1000:]
    assert await read(driver, "blob", 1000, 5) == data[1000:1005]
    assert await read(driver, "blob", len(data)) == b""
    with pytest.raises(PathNotFoundError):
        await read(driver, "missing")


async def test_list_direct_children(driver: StorageDriver) -> None:
    for key in ("top/x", "top/d1/y", "top/d1/z", "top/d2/deep/w", "topper/v"):
        await driver.put(key, b".")
    assert sorted(await driver.list("top")) == ["d1", "d2", "x"]
    assert sorted(await driver.list("top/d1")) == ["y", "z"]
    assert await driver.list("nothing/here") == []


async def test_delete_object_and_prefix(driver: StorageDriver) -> None:
    for key in ("t/a", "t/sub/b", "t/sub/deeper/c", "tx/d"):
        await driver.put(key, b".")
    await driver.delete("t/a")
    assert not await driver.exists("t/a")
    await driver.delete("t")
    assert not await driver.exists("t/sub/deeper/c")
    assert await driver.list("t") == []
    assert await driver.exists("tx/d")  # a sibling sharing the prefix text stays
    await driver.delete("never/was")  # missing keys are not an error


async def test_a_deleted_directory_is_no_longer_listed(driver: StorageDriver) -> None:
    # The shape of a tag: removing one must drop it from the listing at once, even on
    # servers that keep emptied folders (SeaweedFS).
    for tag in ("keep", "gone"):
        await driver.put(f"tags/{tag}/current/link", b".")
    await driver.delete("tags/gone")
    assert await driver.list("tags") == ["keep"]
    await driver.put("tags/gone/current/link", b".")
    assert await driver.list("tags") == ["gone", "keep"]


async def test_invalid_keys_refused(driver: StorageDriver) -> None:
    for key in ("../etc/passwd", "/abs", "a//b", "a/./b", ""):
        with pytest.raises(InvalidKeyError):
            await driver.put(key, b"x")
        with pytest.raises(InvalidKeyError):
            await driver.writer(key)


async def test_writer_resumes_in_another_process_and_commits(driver: StorageDriver) -> None:
    """Many small appends, across part boundaries, each by a fresh writer of a fresh driver."""
    data = os.urandom(23 << 20)
    cuts = [0, 1, 3 << 20, (3 << 20) + 7, 11 << 20, 12 << 20, 21 << 20, len(data)]
    key = "uploads/u1/data"
    await (await driver.writer(key)).close()
    for number, (start, end) in enumerate(itertools.pairwise(cuts)):
        current = driver if number % 2 else twin(driver)
        writer = await current.writer(key, append=True)
        assert writer.size == start
        for piece in range(start, end, 1 << 20):
            await writer.write(data[piece : min(piece + (1 << 20), end)])
        await writer.close()
        assert writer.size == end
        assert (await driver.stat(key)).size == end
        assert await read(twin(driver), key) == data[:end]
    assert await read(driver, key, (5 << 20) - 3, 10 << 20) == data[(5 << 20) - 3 : (15 << 20) - 3]
    assert await read(driver, key, len(data) - 5) == data[-5:]
    writer = await twin(driver).writer(key, append=True)
    await writer.commit("blobs/final")
    assert await read(driver, "blobs/final") == data
    assert not await driver.exists(key)
    assert await driver.list("uploads/u1") == []


async def test_commit_small_and_empty(driver: StorageDriver) -> None:
    await driver.put("dest", b"old content")
    writer = await driver.writer("w/small")
    await writer.write(b"new")
    await writer.close()
    writer = await driver.writer("w/small", append=True)
    await writer.commit("dest")
    assert await driver.get("dest") == b"new"
    writer = await driver.writer("w/empty")
    await writer.commit("empty")
    assert await driver.get("empty") == b""


async def test_writer_without_append_starts_over(driver: StorageDriver) -> None:
    writer = await driver.writer("w/k")
    await writer.write(b"abc")
    await writer.close()
    writer = await driver.writer("w/k", append=False)
    assert writer.size == 0
    await writer.write(b"xy")
    await writer.close()
    assert await read(driver, "w/k") == b"xy"


async def test_cancel_and_delete_discard_writer(driver: StorageDriver) -> None:
    for key in ("w/cancelled", "dir/session/data"):
        writer = await driver.writer(key)
        await writer.write(os.urandom((11 << 20) + 5))
        await writer.close()
    writer = await twin(driver).writer("w/cancelled", append=True)
    await writer.cancel()
    await driver.delete("dir/session")
    for key in ("w/cancelled", "dir/session/data"):
        assert not await driver.exists(key)
        with pytest.raises(PathNotFoundError):
            await read(driver, key)
        with pytest.raises(PathNotFoundError):  # a finished writer is never revived
            await driver.writer(key, append=True)


async def test_one_writer_per_key_across_processes(driver: StorageDriver) -> None:
    owner = await driver.writer("w/owned")
    await owner.write(b"abc")
    for other in (driver, twin(driver)):
        for append in (True, False):
            with pytest.raises(WriterBusyError):
                await other.writer("w/owned", append=append)
    await owner.close()
    second = await twin(driver).writer("w/owned", append=True)
    assert second.size == 3
    with pytest.raises(WriterBusyError):
        await driver.writer("w/owned", append=True)
    await second.commit("done")
    with pytest.raises(PathNotFoundError):  # a committed writer is never revived
        await driver.writer("w/owned", append=True)
    assert await driver.get("done") == b"abc"


async def test_a_writers_time_is_its_last_write_not_its_last_opening(
    driver: StorageDriver,
) -> None:
    """The collector re-reads an idle upload's time after taking its writer: taking it
    must not look like activity (S3 times are whole seconds, hence the wait)."""
    writer = await driver.writer("w/idle")
    await writer.write(b"abc")
    await writer.close()
    written = (await driver.stat("w/idle")).modified
    await asyncio.sleep(1.1)
    again = await twin(driver).writer("w/idle", append=True)
    assert (await driver.stat("w/idle")).modified == written
    await again.close()
    assert (await driver.stat("w/idle")).modified == written


async def test_commit_stores_exactly_what_chunks_streamed(driver: StorageDriver) -> None:
    data = os.urandom((11 << 20) + 3)
    writer = await driver.writer("w/exact")
    await writer.write(data[:100])
    await writer.close()
    writer = await twin(driver).writer("w/exact", append=True)
    await writer.write(data[100:])
    assert b"".join([chunk async for chunk in writer.chunks()]) == data
    await writer.commit("exact")
    assert await read(driver, "exact") == data


async def test_version_names_the_bytes_a_later_writer_finds(driver: StorageDriver) -> None:
    writer = await driver.writer("w/version")
    await writer.write(b"abc")
    await writer.close()
    again = await twin(driver).writer("w/version", append=True)
    assert again.version == writer.version
    await again.write(b"d")
    assert again.version != writer.version
    await again.close()


async def test_scan_lists_every_object_below_with_its_size_and_time(driver: StorageDriver) -> None:
    for key, data in (("s/a", b"1"), ("s/b/c", b"22"), ("s/b/d/e", b"333"), ("sx/f", b".")):
        await driver.put(key, data)
    found = {info.key: info for info in await driver.scan("s")}
    assert {key: info.size for key, info in found.items()} == {"s/a": 1, "s/b/c": 2, "s/b/d/e": 3}
    for key, info in found.items():
        assert info.modified == (await driver.stat(key)).modified
    assert await driver.scan("nothing/here") == []


async def test_delete_many_removes_the_objects_and_the_folders_they_emptied(
    driver: StorageDriver,
) -> None:
    for key in ("d/a/b/x", "d/a/b/y", "d/a/c/z"):
        await driver.put(key, b".")
    await driver.delete_many(["d/a/b/x", "d/a/b/y", "d/never/was"])
    assert not await driver.exists("d/a/b/x") and not await driver.exists("d/a/b/y")
    assert await driver.list("d/a") == ["c"]  # b went with its last object
    assert await driver.exists("d/a/c/z")


async def test_markers_are_empty_objects_every_process_sees(driver: StorageDriver) -> None:
    await driver.put("m/2/t", b"something")
    await driver.put_markers(["m/1/t", "m/2/t", "m/3/deeper/t"])
    other = twin(driver)  # another process's driver on the same storage
    for key in ("m/1/t", "m/2/t", "m/3/deeper/t"):
        assert await other.get(key) == b""
    assert sorted((info.key, info.size) for info in await other.scan("m")) == [
        ("m/1/t", 0),
        ("m/2/t", 0),
        ("m/3/deeper/t", 0),
    ]
    with pytest.raises(InvalidKeyError):
        await driver.put_markers(["m/../escape"])


async def test_scan_named_lists_only_that_object_of_those_folders(
    driver: StorageDriver,
) -> None:
    for key in ("f/a/touched", "f/a/data", "f/b/data", "f/c/touched", "f/c/x/touched"):
        await driver.put(key, b"..")
    await driver.put("f/ab/touched", b"..")  # a name that only starts like one asked for
    await driver.put("f/d/touched/deeper", b".")  # a folder of that name is no object
    found = await driver.scan_named("f", {"a", "b", "c", "d", "gone"}, "touched")
    assert sorted(info.key for info in found) == ["f/a/touched", "f/c/touched"]
    assert {info.size for info in found} == {2}
    assert await driver.scan_named("f", set(), "touched") == []


async def test_scan_leaves_lists_only_the_named_objects_two_folders_below(
    driver: StorageDriver,
) -> None:
    keys = ["t/a/1/link", "t/a/2/link", "t/b/3/link", "t/a/4/other", "t/a/link", "t/a/5/6/link"]
    for key in keys:
        await driver.put(key, b"..")
    await driver.put("t/a/7/link/deeper", b".")  # a folder of that name is no object
    found = await driver.scan_leaves("t", "link")
    assert sorted(info.key for info in found) == ["t/a/1/link", "t/a/2/link", "t/b/3/link"]
    assert {info.size for info in found} == {2}
    assert await driver.scan_leaves("absent", "link") == []


async def test_delete_then_removes_both_lists_and_the_folders_they_emptied(
    driver: StorageDriver,
) -> None:
    for key in ("t/s/f/a/data", "t/s/f/a/tomb-1", "t/s/f/b/data", "t/s/f/b/touched"):
        await driver.put(key, b".")
    await driver.put("l/r/s/a/link", b".")
    await driver.delete_then(
        [(["l/r/s/a/link", "t/s/f/a/data"], ["t/s/f/a/tomb-1"]), (["t/s/f/b/data"], [])]
    )
    assert await driver.list("t/s/f") == ["b"]  # a went with its last object
    assert [info.key for info in await driver.scan("t")] == ["t/s/f/b/touched"]
    assert await driver.scan("l") == []


async def test_put_visible_replaces_whole_for_every_process(driver: StorageDriver) -> None:
    await driver.put_visible("v/summary", b"old")
    await driver.put_visible("v/summary", b"new")
    assert await twin(driver).get("v/summary") == b"new"
    assert [info.key for info in await driver.scan("v")] == ["v/summary"]  # no leftovers
