"""The last garbage collection, for the registry page.

The collector does not store a record of its runs yet; until it does, the registry page
says that no collection is recorded. When it does (a reader of the stored record of the
last run, in `collector/`), `last_collection` returns that record: the page shows its
`finished`, `duration`, `bytes_freed`, `manifests`, `tags`, `blobs`, `repositories` and
`error`.
"""

from __future__ import annotations

from typing import Any

from storage.store import Store


async def last_collection(store: Store) -> Any | None:
    """The last finished collection run, or None when none is recorded."""
    return None
