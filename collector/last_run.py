"""The stored record of the last collection: one small JSON object (`_gc/last-run`).

Every run that deletes (a server's background run or `dockyard gc`, never a dry run)
replaces it at its end, while still holding the lease, so whichever process reads it
(the web UI, an operator) sees the latest finished run of any process or replica.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, fields

from storage import paths
from storage.driver import PathNotFoundError
from storage.store import Store


@dataclass(frozen=True, slots=True)
class RunRecord:
    started: float  # Unix times, by the collecting process's clock
    finished: float
    duration: float  # seconds
    manifests: int
    tags: int
    blobs: int
    links: int
    uploads: int
    repositories: int
    bytes_freed: int
    host: str  # who ran it
    pid: int
    error: str | None = None  # why the run stopped early (the next run finishes the job)
    dry_run: bool = False


# Set in a server worker's collecting child (collector/niced.py): the worker's pid.
started_by: int | None = None


def this_process() -> tuple[str, int]:
    """Who runs the collection: this host, and this process or the worker it serves."""
    return socket.gethostname(), started_by or os.getpid()


async def save(store: Store, record: RunRecord) -> None:
    await store.driver.put(paths.gc_last_run(), json.dumps(asdict(record)).encode())


async def last_run(store: Store) -> RunRecord | None:
    """The last finished run, or None if none finished (or its record is unreadable)."""
    try:
        raw = await store.driver.get(paths.gc_last_run())
    except PathNotFoundError:
        return None
    try:
        data = json.loads(raw)
        return RunRecord(**{field.name: data[field.name] for field in fields(RunRecord)})
    except (ValueError, KeyError, TypeError):
        return None


async def due_in(store: Store, interval: float) -> float | None:
    """Seconds until a run is due, `interval` after the last one finished (negative:
    overdue), by this machine's clock against the recorder's; None when no run has
    finished (a new registry holds nothing older than the grace yet)."""
    record = await last_run(store)
    return None if record is None else record.finished + interval - time.time()
