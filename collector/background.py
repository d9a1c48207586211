"""The server's collector: every process tries a run each `gc.interval`; the lease
lets one of them (across processes and replicas) run it, the others skip."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from collector.run import GcResult

log = logging.getLogger("dockyard.gc")
Observe = Callable[[GcResult], None]
CollectOnce = Callable[[], Awaitable[GcResult]]  # collector.run.collect, or in a child


def _ignore(result: GcResult) -> None:
    return None


async def collect_forever(
    collect_once: CollectOnce, interval: float, observe: Observe = _ignore
) -> None:
    """Runs until cancelled; `observe` sees each run this process made (the server's
    metrics: registry.metrics.gc_observer)."""
    while True:
        # Jittered, so the processes sharing the storage do not all try at once.
        await asyncio.sleep(interval * random.uniform(0.9, 1.1))
        try:
            result = await collect_once()
            if result.skipped is None:
                observe(result)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("garbage collection failed (the next run finishes the job)")
