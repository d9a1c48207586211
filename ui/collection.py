"""The last garbage collection, for the registry page: the record the collector stores at
the end of each run (collector/last_run.py). The page shows its `finished`, `duration`,
`bytes_freed`, `manifests`, `tags`, `blobs`, `repositories` and `error`.
"""

from __future__ import annotations

from collector.last_run import RunRecord, last_run
from storage.store import Store


async def last_collection(store: Store) -> RunRecord | None:
    """The last finished collection run, or None when none is recorded."""
    return await last_run(store)
