"""The ages of cached tags, remembered per process: never younger than the storage's."""

from __future__ import annotations

import pytest

from oci.references import Digest
from proxy import tag_checks
from proxy.tag_checks import TagChecks
from storage import paths
from storage.driver import StorageDriver, Versioned
from tests.support.drivers import keys_asked

DIGEST = Digest.parse("sha256:" + "a" * 64)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(tag_checks, "monotonic", clock)
    return clock


async def test_a_fresh_age_is_remembered_and_read_again_once_it_would_be_too_old(
    driver: StorageDriver, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = keys_asked(driver, "read_versioned", monkeypatch)
    confirming, asking = TagChecks(driver), TagChecks(driver)  # two processes
    assert await asking.age("hub/app", "1", fresh_for=60) is None
    await confirming.confirm("hub/app", "1", DIGEST)
    assert await asking.age("hub/app", "1", fresh_for=60) < 5  # read: it was None
    clock.now += 30
    assert 30 <= await asking.age("hub/app", "1", fresh_for=60) < 35  # remembered, older
    assert len(reads) == 2
    assert await confirming.age("hub/app", "1", fresh_for=60) >= 30  # its own confirmation
    assert len(reads) == 2

    # Past `fresh_for` by the remembered age: the storage is asked, and another process
    # may have confirmed the tag since (here the storage's clock did not move: age ~0).
    clock.now += 31
    assert await asking.age("hub/app", "1", fresh_for=60) < 5
    assert reads == [paths.proxy_checked("hub/app", "1")] * 3


async def test_an_age_is_never_remembered_younger_than_the_storage_holds_it(
    driver: StorageDriver, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await TagChecks(driver).confirm("hub/app", "1", DIGEST)
    stored_age = 50.0
    read_versioned = driver.read_versioned

    async def aged(key: str) -> Versioned:
        found = await read_versioned(key)
        clock.now += 2  # the read takes a while
        return Versioned(found.data, found.version, stored_age)

    monkeypatch.setattr(driver, "read_versioned", aged)
    checks = TagChecks(driver)
    assert await checks.age("hub/app", "1", fresh_for=60) == stored_age
    # counted from before the read: 50 s, and the 2 s the read took
    assert await checks.age("hub/app", "1", fresh_for=60) == stored_age + 2


async def test_the_remembered_tags_are_bounded(
    driver: StorageDriver, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tag_checks, "KEPT", 2)
    checks = TagChecks(driver)
    for tag in ("1", "2", "3"):
        await checks.confirm("hub/app", tag, DIGEST)
    reads = keys_asked(driver, "read_versioned", monkeypatch)
    for tag in ("3", "2", "1"):
        assert await checks.age("hub/app", tag, fresh_for=60) is not None
    assert reads == [paths.proxy_checked("hub/app", "1")]  # the oldest was forgotten
