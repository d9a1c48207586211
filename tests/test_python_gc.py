"""A serving worker freezes what its startup made (registry/python_gc.py); an app made
any other way (the tests', the bench's) freezes nothing, since a frozen object is never
collected."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from registry.app import create_app, create_served_app
from registry.config import CONFIG_ENV, Config
from registry.python_gc import YOUNG_THRESHOLD
from storage.memory import MemoryDriver


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()  # what a test froze is collectable again
    gc.set_threshold(*threshold)


async def test_a_served_worker_freezes_what_its_startup_made(
    unfrozen: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {"storage": {"filesystem": {"root": str(tmp_path)}}, "gc": {"enabled": False}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "config.yaml"))
    app = create_served_app()
    assert gc.get_freeze_count() == 0
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 10_000  # the modules, the app, its store
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD


async def test_an_app_made_otherwise_freezes_nothing(unfrozen: None) -> None:
    app = create_app(Config(gc={"enabled": False}), MemoryDriver())
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold()[0] != YOUNG_THRESHOLD
