"""The last garbage collection, for the registry page.

The collector does not store a record of its runs yet; until it does, the registry page
says that no collection is recorded. This is the one place to read it from.
"""

from __future__ import annotations

from typing import Any

from storage.store import Store


async def last_collection(store: Store) -> Any | None:
    """The last finished collection run (finished, duration, bytes_freed, manifests, tags,
    blobs, repositories, error), or None when none is recorded."""
    return None
