"""Pacing the servers' background collection to a share of the time (`gc.background_share`).

At nice 19 the collecting process takes only the CPU the workers leave idle, but not
the rest of its cost to serving: the storage's side of its work (the kernel's work on
its files, SeaweedFS answering its requests at normal priority) and the CPU caches it
evicts. A duty cycle bounds all of it: the run works for at most `SLICE` seconds, then
rests long enough that work takes at most `share` of the time. `dockyard gc` runs at
full speed (share 1: never rests).

The rests fall between the collector's steps (before each repository the mark takes,
each fan-out folder the sweep takes, each summary it rewrites), never inside one: a
step holds tombs, and the lease is renewed before every batch of deletions, so a rest
changes no step of the design (collector/__init__.py); it only makes a run longer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

SLICE = 0.1  # seconds of work between two rests


class Pacer:
    """Shared by every step of one run: whichever step comes next after a slice of
    work waits the rest out, and the others wait behind it (nothing new starts)."""

    def __init__(
        self,
        share: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"a share of the time is in (0, 1], not {share}")
        self.share = share
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._working_since = clock()
        self.rested = 0.0  # seconds this run rested, in all

    async def pause(self) -> None:
        """Before a step: rest if the work since the last rest filled a slice."""
        if self.share >= 1:
            return
        async with self._lock:
            worked = self._clock() - self._working_since
            if worked < SLICE:
                return
            rest = worked * (1 - self.share) / self.share
            await self._sleep(rest)
            self.rested += rest
            self._working_since = self._clock()
