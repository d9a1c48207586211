"""The filesystem driver's atomicity: a failure at any point leaves the old state or the new."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage.driver import PathNotFoundError
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
