"""Fixtures of the storage tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.s3 import S3Driver
from tests.support.drivers import make_driver


@pytest.fixture
async def s3(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[S3Driver]:
    """A fresh S3 driver on the session's SeaweedFS, under a prefix of its own."""
    driver = make_driver("s3", request, tmp_path)
    assert isinstance(driver, S3Driver)
    yield driver
    await driver.close()
