"""Running the collector beside an in-process API on the same storage."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from collector.run import Deletion, GcOptions, GcResult, collect
from storage.driver import StorageDriver
from storage.s3 import S3Driver
from storage.store import Store
from tests.support.drivers import twin

# grace 0: whatever was written before the run started may go (tests age things by
# waiting past the storage clock's resolution instead of waiting an hour).
NO_GRACE = GcOptions(grace=0.0, upload_max_age=86400.0)


async def age(driver: StorageDriver) -> None:
    """Let the storage clock pass what was written so far (S3 times are whole seconds)."""
    await asyncio.sleep(1.05 if isinstance(driver, S3Driver) else 0.02)


class Steps:
    """A hook that runs `action` once, the first time the collector reaches `step`."""

    def __init__(self, step: str, action: Callable[[], Awaitable[None]]) -> None:
        self.step, self.action, self.done = step, action, False

    async def __call__(self, step: str) -> None:
        if step == self.step and not self.done:
            self.done = True
            await self.action()


async def run_gc(
    driver: StorageDriver,
    options: GcOptions = NO_GRACE,
    dry_run: bool = False,
    hook: Callable[[str], Awaitable[None]] | None = None,
) -> tuple[GcResult, list[Deletion]]:
    """One collection by another process (its own driver and store) on `driver`'s storage."""
    deletions: list[Deletion] = []
    store = Store(twin(driver))
    kwargs = {"hook": hook} if hook is not None else {}
    try:
        result = await collect(store, options, dry_run, deletions.append, **kwargs)
    finally:
        await store.close()
    return result, deletions
