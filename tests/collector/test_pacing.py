"""The background collection's pacing (collector/pacing.py): a duty cycle, checked on the
rests a run records under a fake clock, never on timings."""

from __future__ import annotations

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


async def test_a_pacer_rests_after_a_slice_so_work_takes_its_share() -> None:
    time = FakeTime()
    pacer = Pacer(0.25, time.clock, time.sleep)
    time.work(SLICE / 2)
    await pacer.pause()
    assert time.sleeps == []  # less than a slice of work: no rest yet
    time.work(SLICE)
    await pacer.pause()
    assert time.sleeps == [pytest.approx(1.5 * SLICE * 3)]  # worked 1.5 slices: 25 % of it all
    time.work(SLICE / 2)
    await pacer.pause()
    assert len(time.sleeps) == 1  # the slice starts again after a rest
    assert pacer.rested == pytest.approx(sum(time.sleeps))


async def test_full_speed_never_rests() -> None:
    time = FakeTime()
    pacer = Pacer(1.0, time.clock, time.sleep)
    time.work(100 * SLICE)
    await pacer.pause()
    assert time.sleeps == [] and pacer.rested == 0


def test_only_the_servers_runs_are_paced() -> None:
    config = Config.model_validate({"gc": {"background_share": 0.3}})
    assert GcOptions.background(config).share == 0.3
    assert GcOptions.of(config).share == 1.0  # `dockyard gc`
    assert Config().gc.background_share == 0.2


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
        assert min(time.sleeps) == pytest.approx(SLICE)  # at least a slice worked: as long a rest
        assert result.rested == pytest.approx(sum(time.sleeps))
