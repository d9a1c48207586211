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


@pytest.mark.parametrize("storage_config", ["filesystem", "s3"], indirect=True)
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
