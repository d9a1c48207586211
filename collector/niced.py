"""The server's background collection, run in a child process at the lowest CPU priority.

A collection is CPU work in Python (listings parsed, tombs and deletions issued); run on
a worker's event loop, every CPU-second it took on a small machine was a second of
serving lost (bench/RESULTS.md, "Garbage collection"). In a child at `nice 19` the
kernel gives it only the CPU the workers leave. The child takes the lease itself, as
`dockyard gc` does, so nothing of the design changes; the worker first looks at the
lease, so as not to start a process only for it to find another collector running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging.config
import os
import pickle
import signal
import sys

from collector import last_run
from collector.known_references import KnownReferences
from collector.run import GcOptions, GcResult, collect
from registry.config import Config
from storage import paths
from storage.lease import held
from storage.store import Store

STOP_SECONDS = 10.0  # a cancelled run's time to let its lease go before it is killed


async def collect_in_child(store: Store, config: Config) -> GcResult:
    """One run in a child process on the same storage (`store` only peeks at the lease)."""
    options = GcOptions.of(config)
    if await held(store.driver, paths.gc_lease(), options.lease_seconds):
        return GcResult(skipped="another process holds the lease")
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "collector.niced",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await child.communicate(pickle.dumps((config, os.getpid())))
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGINT)  # asyncio.run cancels the run: it lets go
        try:
            await asyncio.wait_for(child.wait(), STOP_SECONDS)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                child.kill()  # what a crash leaves is safe too (collector/__init__.py)
        raise
    if child.returncode != 0:
        raise RuntimeError(f"the collecting process exited with {child.returncode}")
    return GcResult(**json.loads(out.splitlines()[-1]))


async def _collect(config: Config) -> GcResult:
    from registry.drivers import create_driver

    store = Store(create_driver(config))
    try:
        with KnownReferences.opened(config.gc) as known:
            return await collect(store, GcOptions.background(config), known=known)
    finally:
        await store.close()


def main() -> None:
    os.nice(19)
    config, worker = pickle.load(sys.stdin.buffer)  # from our own parent: trusted
    from registry.logs import log_config

    logging.config.dictConfig(log_config(config.log))
    last_run.started_by = worker  # its record names the worker that runs it
    result = asyncio.run(_collect(config))
    print(json.dumps(result.as_dict()), flush=True)


if __name__ == "__main__":
    main()
