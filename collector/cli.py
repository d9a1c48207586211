"""`dockyard gc`: one collection, printing what it deletes and a summary."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from collector.known_references import KnownReferences
from collector.run import Deletion, GcOptions, GcResult, collect
from collector.sweep import Hook, no_hook
from registry.config import Config

# For crash tests: the run stops at this step (a name collector.sweep passes its hook),
# says so on standard error and waits to be killed, so a kill -9 lands exactly there.
PAUSE_ENV = "REGISTRY_GC_PAUSE_AT"
PAUSED = "gc paused at"


def _pause_at(wanted: str, lines: Lines) -> Hook:
    async def pause(step: str) -> None:
        if step == wanted:
            lines.flush()
            print(f"{PAUSED} {step}", file=sys.stderr, flush=True)
            await asyncio.Event().wait()  # until killed

    return pause


class Lines:
    """Report lines for standard output, written a chunk at a time: one system call a
    chunk even where the output is unbuffered (PYTHONUNBUFFERED, as the Dockerfile sets:
    a collection deleting 100,000 blobs and links made 200,000 writes)."""

    def __init__(self, chunk: int = 1000) -> None:
        self._lines: list[str] = []
        self._chunk = chunk

    def add(self, line: str) -> None:
        self._lines.append(line)
        if len(self._lines) >= self._chunk:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            sys.stdout.write("\n".join(self._lines) + "\n")
            self._lines.clear()


def _deletion_line(deletion: Deletion, as_json: bool, dry_run: bool) -> str:
    if as_json:
        return json.dumps(
            {
                "deleted" if not dry_run else "would_delete": deletion.kind,
                "what": deletion.what,
                "why": deletion.why,
                "size": deletion.size,
            }
        )
    verb = "would delete" if dry_run else "deleted"
    size = f" ({deletion.size} bytes)" if deletion.size is not None else ""
    why = f": {deletion.why}" if deletion.why else ""
    return f"{verb} {deletion.kind} {deletion.what}{size}{why}"


def _print_summary(result: GcResult, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"summary": result.as_dict()}))
        return
    if result.skipped:
        print(f"gc skipped: {result.skipped}")
        return
    print(
        f"{'would remove' if result.dry_run else 'removed'}: {result.manifests} manifests,"
        f" {result.tags} tags, {result.blobs} blobs, {result.links} blob links,"
        f" {result.uploads} uploads, {result.repositories} repositories;"
        f" {result.bytes_freed} bytes freed in {result.duration:.1f}s"
    )


async def _collect(config: Config, dry_run: bool, as_json: bool, lines: Lines) -> GcResult:
    from registry.drivers import create_driver
    from storage.store import Store

    store = Store(create_driver(config))
    try:
        with KnownReferences.opened(config.gc) as known:
            return await collect(
                store,
                GcOptions.of(config),
                dry_run=dry_run,
                report=lambda deletion: lines.add(_deletion_line(deletion, as_json, dry_run)),
                hook=_pause_at(os.environ[PAUSE_ENV], lines)
                if os.environ.get(PAUSE_ENV)
                else no_hook,
                known=known,
            )
    finally:
        await store.close()


def run_gc(config: Config, args: argparse.Namespace) -> int:
    lines = Lines()
    try:
        result = asyncio.run(_collect(config, args.dry_run, args.json, lines))
    finally:
        lines.flush()
    _print_summary(result, args.json)
    sys.stdout.flush()
    return 0 if result.skipped is None else 3
