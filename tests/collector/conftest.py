from __future__ import annotations

import pytest

from registry.config import Config


@pytest.fixture
def config() -> Config:
    # The API re-touches a blob at most every gc.grace / 10: the same grace as the
    # collector's (tests.collector.support.NO_GRACE), as every process sharing a storage.
    return Config(gc={"enabled": False, "grace": 0})
