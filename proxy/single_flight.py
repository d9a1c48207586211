"""Concurrent callers with the same key share one task (within this process)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

V = TypeVar("V")


class SingleFlight(Generic[V]):
    """At most one task per key runs; it leaves the map when done, so the map holds only
    what is in flight (bounded by the requests waiting on it)."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Task[V]] = {}

    def start(self, key: Hashable, work: Callable[[], Coroutine[Any, Any, V]]) -> asyncio.Task[V]:
        """The task running for `key`, or a new one running `work()`."""
        task = self._running.get(key)
        if task is None:
            task = asyncio.create_task(work())
            self._running[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return task

    async def run(self, key: Hashable, work: Callable[[], Coroutine[Any, Any, V]]) -> V:
        """Run `work()` or join the task already running for `key`. A caller that goes
        away (cancelled) does not cancel the work the others wait for."""
        return await asyncio.shield(self.start(key, work))

    def _finished(self, key: Hashable, task: asyncio.Task[V]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved: the callers that wanted it got it
