"""kill -9 a running registry (parent and both workers) at random moments while clients
push (one of them racing a PATCH against the PUT that completes the same upload
session), restart it on the same storage, and check what the API promises after a crash:
every blob served hashes to its digest, no acknowledged push is lost, every tag resolves
(or can be deleted), referrers name only manifests that exist, pushes the crash cut off
succeed when retried, and the upload sessions it left can be cancelled.

The workload's choices come from one seed, printed on failure; set DOCKYARD_CRASH_SEED
to replay them (the moments the kills land in the server's work still vary).
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.crash_checks import check_after_restart
from tests.support.crash_workload import ClientTask, Ledger, retry_pending, run_workload
from tests.support.server import RegistryProcess

pytestmark = pytest.mark.e2e

ROUNDS = 6
CLIENT_TASKS = 5
TIMEOUT = httpx.Timeout(30.0)


def crash_seed() -> int:
    return int(os.environ.get("DOCKYARD_CRASH_SEED") or random.SystemRandom().getrandbits(32))


# Known bugs on main that this test finds; the lead removes the marks once they are fixed.
# Not strict: whether a kill lands in one of these windows varies from run to run (each
# showed in one to two runs of three), so a strict mark would make the suite flaky.
REFERRERS_NOT_CRASH_CONSISTENT = (
    "manifest put/delete are not crash-consistent: the referrer entry is written before and "
    "deleted after the revision link, so referrers lists manifests that are not served (for "
    "good when a DELETE was cut off: its retry answers 404)"
)
TAG_DIRECTORIES = (
    "tags are directories: a kill mid tag write leaves a tag listed in tags/list that neither "
    "resolves nor can be deleted (404)"
)
EMPTY_OBJECTS = (
    "SeaweedFS keeps a 0-byte object when a PUT is cut off after its headers: an empty "
    "revision or tag link answers 500 until rewritten, and manifest content stored once "
    "that way answers 500 for good"
)
LEASED_SESSIONS = (
    "an upload session whose writer was killed cannot be cancelled for the S3 lease's 60 s: "
    "DELETE answers 416 'another request is writing to this upload'"
)


def known_bugs(*bugs: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=False, reason="; ".join(bugs))


@pytest.mark.parametrize(
    "storage_config",
    [
        pytest.param(
            "filesystem", marks=known_bugs(REFERRERS_NOT_CRASH_CONSISTENT, TAG_DIRECTORIES)
        ),
        pytest.param(
            "s3",
            marks=known_bugs(REFERRERS_NOT_CRASH_CONSISTENT, EMPTY_OBJECTS, LEASED_SESSIONS),
        ),
    ],
    indirect=True,
)
async def test_kill_9_during_pushes_loses_nothing_acknowledged(
    tmp_path: Path, storage_config: dict[str, Any]
) -> None:
    seed = crash_seed()
    print(f"crash test seed: DOCKYARD_CRASH_SEED={seed}")
    rng = random.Random(seed)
    ledger = Ledger()
    tasks = [
        ClientTask(number, random.Random(rng.getrandbits(64))) for number in range(CLIENT_TASKS)
    ]
    server = RegistryProcess(tmp_path / "registry", {"storage": storage_config}, workers=2)
    try:
        server.start()
        for ledger.round in range(1, ROUNDS + 1):
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
                workload = asyncio.ensure_future(run_workload(ledger, client, tasks))
                await asyncio.sleep(rng.uniform(0.1, 1.5))
                server.kill()
                await workload
            server.start()
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
                await check_after_restart(ledger, client, every_blob=False)
                await retry_pending(ledger, client)
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
            await check_after_restart(ledger, client, every_blob=True)
    finally:
        server.stop()
    print(
        f"{ledger.acknowledged} pushes acknowledged, {ledger.retried} retried, "
        f"{ledger.dangling_tags_deleted} dangling tags deleted, in {ROUNDS} kill -9 rounds"
    )
    history = tmp_path / "history.log"
    history.write_text("\n".join(ledger.history))
    failures = "\n".join(ledger.failures[:40])
    assert not ledger.failures, (
        f"DOCKYARD_CRASH_SEED={seed}: {len(ledger.failures)} failures "
        f"(server log: {server.log_path}, requests: {history}):\n{failures}"
    )
