"""The background collection's pacing (collector/pacing.py): a duty cycle, checked on the
rests a run records under a fake clock, never on timings."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest

from collector import run as run_module
from collector.pacing import SLICE, Pacer
from collector.run import GcOptions
from registry.config import Config
from storage.driver import StorageDriver
from tests.api.helpers import push_blob, push_image
from tests.collector.support import NO_GRACE, age, run_gc


class FakeTime:
    """A clock that moves only when told to (`work`) or when slept on."""

    def __init__(self, per_look: float = 0.0) -> None:
        self.now = 0.0
        self.per_look = per_look  # each look at the clock finds this much more work done
        self.sleeps: list[float] = []

    def clock(self) -> float:
        self.now += self.per_look
        return self.now

    def work(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def _step(pacer: Pacer, time: FakeTime, seconds: float) -> None:
    async with pacer.step():
        time.work(seconds)


async def test_a_pacer_rests_after_a_slice_so_work_takes_its_share() -> None:
    time = FakeTime()
    pacer = Pacer(0.25, time.clock, time.sleep)
    await _step(pacer, time, SLICE / 2)
    await _step(pacer, time, SLICE)
    assert time.sleeps == []  # the second step started before a slice was worked
    await _step(pacer, time, SLICE / 2)
    assert time.sleeps == [pytest.approx(1.5 * SLICE * 3)]  # worked 1.5 slices: 25 % of it all
    await _step(pacer, time, SLICE / 2)
    assert len(time.sleeps) == 1  # the slice starts again after a rest
    assert pacer.rested == pytest.approx(sum(time.sleeps))


async def test_a_rest_waits_for_the_steps_under_way_and_counts_their_work() -> None:
    """Steps run several at once (S3 requests take long): the rest starts only when the
    others are done, so it also covers the work they did past the slice."""
    time = FakeTime()
    pacer = Pacer(0.5, time.clock, time.sleep)
    finish = asyncio.Event()

    async def long_step() -> None:
        async with pacer.step():
            await finish.wait()
            time.work(3 * SLICE)

    under_way = asyncio.create_task(long_step())
    await asyncio.sleep(0)
    time.work(SLICE)
    next_step = asyncio.create_task(_step(pacer, time, 0))
    await asyncio.sleep(0)
    assert time.sleeps == [] and not next_step.done()  # waits for the long step
    finish.set()
    await asyncio.gather(under_way, next_step)
    assert time.sleeps == [pytest.approx(4 * SLICE)]  # all four slices worked, as long a rest


async def test_full_speed_never_rests() -> None:
    time = FakeTime()
    pacer = Pacer(1.0, time.clock, time.sleep)
    await _step(pacer, time, 100 * SLICE)
    await _step(pacer, time, 0)
    assert time.sleeps == [] and pacer.rested == 0


def test_only_the_servers_runs_are_paced() -> None:
    config = Config.model_validate({"gc": {"background_share": 0.3}})
    assert GcOptions.background(config).share == 0.3
    assert GcOptions.of(config).share == 1.0  # `dockyard gc`
    assert Config().gc.background_share == 0.1


@pytest.mark.parametrize("share", [0.5, 1.0])
async def test_a_run_rests_between_its_steps_at_its_share(
    client: httpx.AsyncClient,
    driver: StorageDriver,
    monkeypatch: pytest.MonkeyPatch,
    share: float,
) -> None:
    """Each step of the run (a repository, a fan-out folder, a summary) asks the pacer
    first: with a clock on which every look finds a slice of work done, a paced run
    rests before every step, as long as it worked, and what it rested is in its result."""
    time = FakeTime(per_look=SLICE)
    monkeypatch.setattr(run_module, "Pacer", lambda share: Pacer(share, time.clock, time.sleep))
    for n in range(3):
        await push_image(client, f"team/app{n}", "v1", seed=f"kept {n}")
        await push_blob(client, f"team/app{n}", f"orphan {n}".encode())
    await age(driver)
    result, _ = await run_gc(driver, dataclasses.replace(NO_GRACE, share=share))
    assert result.blobs == 3  # paced or not, the same work
    if share == 1.0:
        assert time.sleeps == [] and result.rested == 0
    else:
        assert len(time.sleeps) >= 3 + 3  # at least the repositories and the orphans' folders
        assert min(time.sleeps) >= SLICE * 0.999  # at least a slice worked: as long a rest
        assert result.rested == pytest.approx(sum(time.sleeps))
