"""The filesystem driver reuses a directory listing only while the directory is unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage import filesystem
from storage.filesystem import FilesystemDriver


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every directory counts as settled, so every listing may be remembered."""
    monkeypatch.setattr(filesystem, "_SETTLED_NS", -(10**12))


@pytest.mark.usefixtures("settled")
async def test_listing_sees_entries_added_and_removed_by_anyone(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    await driver.put("tags/a/link", b"1")
    assert await driver.list("tags") == ["a"]
    assert await driver.list("tags") == ["a"]  # remembered now

    # Another process adds and removes entries behind this driver's back.
    (tmp_path / "tags" / "b").mkdir()
    assert sorted(await driver.list("tags")) == ["a", "b"]
    (tmp_path / "tags" / "a" / "link").unlink()
    (tmp_path / "tags" / "a").rmdir()
    assert await driver.list("tags") == ["b"]


async def test_recently_changed_directory_is_listed_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change within the timestamp tick of our read leaves the stat unchanged;
    only listings of directories that have settled may be remembered."""
    driver = FilesystemDriver(tmp_path)
    await driver.put("tags/a/link", b"1")
    directory = tmp_path / "tags"
    frozen = os.stat(directory)
    real_stat = os.stat

    def stat(path: os.PathLike[str] | str, *args: object, **kwargs: object) -> os.stat_result:
        return frozen if Path(path) == directory else real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", stat)
    assert await driver.list("tags") == ["a"]
    (directory / "b").mkdir()
    assert sorted(await driver.list("tags")) == ["a", "b"]


@pytest.mark.usefixtures("settled")
async def test_returned_listing_is_the_callers_own(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    await driver.put("tags/a/link", b"1")
    await driver.list("tags")
    (await driver.list("tags")).append("mutated")
    assert await driver.list("tags") == ["a"]
