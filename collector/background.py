"""The server's collector: every process tries a run each `gc.interval`; the lease
lets one of them (across processes and replicas) run it, the others skip."""

from __future__ import annotations

import asyncio
import logging
import random

from collector.run import GcOptions, collect
from storage.store import Store

log = logging.getLogger("dockyard.gc")


async def collect_forever(store: Store, options: GcOptions, interval: float) -> None:
    while True:
        # Jittered, so the processes sharing the storage do not all try at once.
        await asyncio.sleep(interval * random.uniform(0.9, 1.1))
        try:
            await collect(store, options)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("garbage collection failed (the next run finishes the job)")
