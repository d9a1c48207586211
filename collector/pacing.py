"""Pacing the servers' background collection to a share of the time (`gc.background_share`).

At nice 19 the collecting process takes only the CPU the workers leave idle, but not
the rest of its cost to serving: the storage's side of its work (the kernel's work on
its files, SeaweedFS answering its requests at normal priority). A duty cycle bounds
all of it: the run works for a slice of time (`SLICE`, or until the steps under way
when it ends are done), then does nothing long enough that its work takes at most
`share` of the time. `dockyard gc` runs at full speed (share 1: never rests).

The rests fall between the collector's steps (a repository the mark takes, a fan-out
folder the sweep takes, a summary it rewrites), never inside one: a step holds tombs,
and the lease is renewed before every batch of deletions, so a rest changes no step
of the design (collector/__init__.py); it only makes a run longer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

SLICE = 0.1  # seconds of work between two rests (more if a step under way takes longer)


class Pacer:
    """Shared by every step of one run (several run at once): after a slice, the next
    step to start waits for the others under way to finish, then rests, while nothing
    else starts."""

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
        self._turn = asyncio.Lock()  # one step at a time decides whether to rest
        self._under_way = 0
        self._drained = asyncio.Event()
        self._working_since = clock()
        self.rested = 0.0  # seconds this run rested, in all

    @asynccontextmanager
    async def step(self) -> AsyncIterator[None]:
        """Around one step: it starts once the pacer lets it."""
        if self.share >= 1:
            yield
            return
        async with self._turn:
            if self._clock() - self._working_since >= SLICE:
                while self._under_way:
                    self._drained.clear()
                    await self._drained.wait()
                worked = self._clock() - self._working_since
                rest = worked * (1 - self.share) / self.share
                await self._sleep(rest)
                self.rested += rest
                self._working_since = self._clock()
            self._under_way += 1
        try:
            yield
        finally:
            self._under_way -= 1
            if not self._under_way:
                self._drained.set()
