"""The filesystem driver answers from the kernel's caches on the event loop, and in a
thread, with the same answers, when the caches fall short (storage.nowait)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from storage import filesystem, nowait
from storage.driver import PathNotFoundError
from storage.filesystem import FilesystemDriver

pytestmark = pytest.mark.skipif(nowait._syscall is None, reason="needs Linux openat2")


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filesystem, "_SETTLED_NS", -(10**12))


def forbid_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("a thread was used for a cached answer")

    monkeypatch.setattr(asyncio.get_running_loop(), "run_in_executor", refuse)


async def fill(driver: FilesystemDriver) -> None:
    await driver.put("repo/tags/a/link", b"sha256:aa")
    await driver.put("repo/tags/b/link", b"sha256:bb")
    assert sorted(await driver.list("repo/tags")) == ["a", "b"]  # remembered now
    assert not await driver.exists("repo/tags/c/link")  # a missing name, looked up once


async def answers(driver: FilesystemDriver) -> tuple[object, ...]:
    with pytest.raises(PathNotFoundError):
        await driver.get("repo/tags/c/link")
    return (
        await driver.get("repo/tags/a/link"),
        (await driver.stat("repo/tags/b/link")).size,
        await driver.exists("repo/tags/a/link"),
        await driver.exists("repo/tags/c/link"),
        sorted(await driver.list("repo/tags")),
    )


EXPECTED = (b"sha256:aa", 9, True, False, ["a", "b"])


@pytest.mark.usefixtures("settled")
async def test_cached_small_reads_stats_and_listings_take_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = FilesystemDriver(tmp_path)
    await fill(driver)
    forbid_threads(monkeypatch)
    assert await answers(driver) == EXPECTED


@pytest.mark.usefixtures("settled")
async def test_what_the_caches_lack_is_done_in_a_thread_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = FilesystemDriver(tmp_path)
    await fill(driver)
    monkeypatch.setattr(nowait, "_open", lambda path, how: None)  # every lookup misses
    assert await answers(driver) == EXPECTED


async def test_a_listing_changed_since_is_listed_afresh(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    await driver.put("repo/tags/a/link", b"1")
    assert await driver.list("repo/tags") == ["a"]
    (tmp_path / "repo" / "tags" / "b").mkdir()
    assert sorted(await driver.list("repo/tags")) == ["a", "b"]


def test_read_cached_reads_only_small_regular_files(tmp_path: Path) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    small.write_bytes(b"x" * nowait.SMALL)
    large.write_bytes(b"x" * (nowait.SMALL + 1))
    (tmp_path / "empty").write_bytes(b"")
    assert nowait.read_cached(os.fsencode(small)) == b"x" * nowait.SMALL
    assert nowait.read_cached(os.fsencode(tmp_path / "empty")) == b""
    assert nowait.read_cached(os.fsencode(large)) is None
    assert nowait.read_cached(os.fsencode(tmp_path)) is None
    assert not (tmp_path / "missing").exists()  # now the kernel remembers it is missing
    with pytest.raises(FileNotFoundError):
        nowait.read_cached(os.fsencode(tmp_path / "missing"))
    cached = nowait.stat_cached(os.fsencode(large))
    assert cached is not None and cached.st_ino == large.stat().st_ino
