"""Tombs a killed collector left, removed by the first request that meets one.

A collector removes each tomb once what it covers is gone (collector/sweep.py); a run
killed in between (kill -9, out of memory, a machine lost) leaves it, and the API
answers the blob missing and fails its uploads with 503 while it stands. The next run
removes tombs older than `STALE_AFTER`, but a server's next run may be `gc.interval`
away. So the API removes them itself, under the rules that run keeps: only tombs older
than `STALE_AFTER` by the storage's clock, and only while holding the collector's
lease. A live run renews its lease before each batch and keeps a tomb for one batch,
so a tomb that old under a lease nobody holds was left by a run that is gone.
"""

from __future__ import annotations

import logging

from oci.references import Digest
from storage import paths
from storage.driver import PathNotFoundError, StorageDriver
from storage.lease import LEASE_SECONDS, take

log = logging.getLogger("dockyard.gc")

STALE_AFTER = 2 * LEASE_SECONDS


async def cleared(driver: StorageDriver, digest: Digest, tombs: list[str]) -> bool:
    """Whether the blob's `tombs` (entries of its folder) are gone: each is removed if a
    dead collector left it; False while any may still be a live collector's."""
    lease = await take(driver, paths.gc_lease())
    if lease is None:
        return False  # a run (or a request doing this) holds it: a run removes them itself
    try:
        cutoff = (await driver.stat(paths.gc_lease())).modified - STALE_AFTER
        stale = []
        for tomb in tombs:
            key = f"{paths.blob_dir(digest)}/{tomb}"
            try:
                if (await driver.stat(key)).modified >= cutoff:
                    return False
            except PathNotFoundError:
                continue
            stale.append(key)
        if stale:
            await driver.delete_many(stale)
            log.warning("removed %d tomb(s) a killed collector left on %s", len(stale), digest)
    finally:
        await lease.release()
    return True
