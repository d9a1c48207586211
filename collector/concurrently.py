"""Running the collector's independent steps (repositories, fan-out folders) a few at a
time: its storage calls wait on disk or network, rarely on the CPU."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from collector.pacing import Pacer

Item = TypeVar("Item")
Result = TypeVar("Result")


async def concurrently(
    items: Iterable[Item],
    action: Callable[[Item], Awaitable[Result]],
    limit: int,
    pacer: Pacer | None = None,
) -> list[Result]:
    """`action` on every item, at most `limit` at once, results in order, each started
    when `pacer` lets it. The first failure cancels the rest (a run that lost its lease
    deletes nothing more) and is raised."""
    semaphore = asyncio.Semaphore(limit)

    async def one(item: Item) -> Result:
        async with semaphore:
            if pacer is None:
                return await action(item)
            async with pacer.step():
                return await action(item)

    tasks = [asyncio.ensure_future(one(item)) for item in items]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
