"""A process's caches of immutable facts stay within their bounds, whatever fills them."""

from __future__ import annotations

import asyncio

import pytest

from oci.references import Digest
from storage import blobs, manifests
from storage.memory import MemoryDriver
from storage.store import Store


def _content(i: int, size: int = 100) -> tuple[bytes, Digest]:
    data = f"content {i} ".encode().ljust(size, b".")
    return data, Digest.of(data)


async def test_sizes_learnt_from_writes_are_bounded_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that stores blobs and answers for them never stats one: its map of
    sizes grew with every blob it stored, past the bound that only a stat applied."""
    monkeypatch.setattr(blobs, "_REMEMBERED", 10)
    store = Store(MemoryDriver())
    for i in range(25):
        data, digest = _content(i)
        await store.blobs.put(data, digest)
        assert await store.blobs.size(digest) == len(data)
    assert 0 < len(store.blobs._sizes) <= 10


async def test_cached_manifests_count_what_an_entry_costs_beside_its_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A small manifest's digest and map node cost about what its bytes do: a bound
    that counted the bytes alone held twice the memory it said."""
    bound = 10 * (100 + manifests._MANIFEST_OVERHEAD)
    monkeypatch.setattr(manifests, "_CACHED_MANIFEST_BYTES", bound)
    store = Store(MemoryDriver())
    for i in range(40):
        data, digest = _content(i)
        await store.blobs.put(data, digest)
        await store.manifests.get("team/app", digest)  # no revision: None, bytes read
    assert len(store.manifests._content) == 10


async def test_a_manifest_read_by_two_requests_at_once_is_counted_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two requests that miss the cache for one digest both read it; the second to
    finish counted its bytes again, so the cache evicted early (and drifted for good)."""
    store = Store(MemoryDriver())
    data, digest = _content(0)
    await store.blobs.put(data, digest)
    both_reading = asyncio.Barrier(2)
    read = store.blobs.get

    async def read_together(wanted: Digest) -> bytes:
        await both_reading.wait()
        return await read(wanted)

    monkeypatch.setattr(store.blobs, "get", read_together)
    await asyncio.gather(*(store.manifests.get("team/app", digest) for _ in range(2)))
    assert store.manifests._content_bytes == len(data) + manifests._MANIFEST_OVERHEAD
