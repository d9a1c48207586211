"""The server's collector: every process tries a run once `gc.interval` has passed since
the last run of any process finished (the stored record, collector/last_run.py), so
restarts do not put a run off; the lease lets one of them (across processes and
replicas) run it, the others skip."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from collector.run import GcResult

log = logging.getLogger("dockyard.gc")
Observe = Callable[[GcResult], None]
CollectOnce = Callable[[], Awaitable[GcResult]]  # collector.run.collect, or in a child
DueIn = Callable[[], Awaitable[float | None]]  # seconds until a run is due; None: unknown


def _ignore(result: GcResult) -> None:
    return None


async def _unknown() -> float | None:
    return None


async def collect_forever(
    collect_once: CollectOnce,
    interval: float,
    observe: Observe = _ignore,
    due_in: DueIn = _unknown,
) -> None:
    """Runs until cancelled; `observe` sees each run this process made (the server's
    metrics: registry.metrics.gc_observer). Before each try it waits until `due_in`
    says a run is due, a whole interval when it cannot tell (no run finished yet, or
    the record unreadable), then a jitter of 5-10% of the interval, so that the
    processes sharing the storage do not all try at once, and a process finding the
    lease held tries again only that much later."""
    while True:
        try:
            due = await due_in()
        except Exception:
            log.exception("could not read when the last collection ran")
            due = None
        wait = interval if due is None else max(due, 0.0)
        await asyncio.sleep(wait + interval * random.uniform(0.05, 0.1))
        try:
            result = await collect_once()
            if result.skipped is None:
                observe(result)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("garbage collection failed (the next run finishes the job)")
