"""Fixtures for in-process access-control tests: users and an app in a chosen auth mode."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry.app import create_app
from registry.config import Config
from storage.memory import MemoryDriver
from tests.support.auth import write_users

USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "root": "root-pw"}

RULES: dict[str, Any] = {
    "admins": ["root"],
    "groups": {"devs": ["alice", "carol"]},
    "rules": [
        {"repositories": ["team/**"], "groups": ["devs"], "actions": ["pull", "push"]},
        {"repositories": ["team/*"], "users": ["bob"], "actions": ["pull"]},
        {"repositories": ["shared/*"], "users": ["*"], "actions": ["pull", "push", "delete"]},
    ],
    "anonymous_pull": ["public/**"],
    "user_namespaces": True,
}

AppFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    return write_users(tmp_path / "htpasswd", USERS)


@pytest.fixture
def make_config(tmp_path: Path, users_file: Path) -> Callable[..., Config]:
    def make(mode: str, **auth: Any) -> Config:
        settings = {**RULES, "mode": mode, "htpasswd": str(users_file), **auth}
        return Config(auth=settings, storage={"filesystem": {"root": str(tmp_path / "data")}})

    return make


@pytest.fixture
async def open_client() -> AsyncIterator[Callable[[Config], httpx.AsyncClient]]:
    """Opens clients on fresh apps (memory storage); closes them all at the end."""
    clients: list[httpx.AsyncClient] = []

    def open_(config: Config, driver: MemoryDriver | None = None) -> httpx.AsyncClient:
        app = create_app(config, driver or MemoryDriver())
        transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 4321))
        client = httpx.AsyncClient(transport=transport, base_url="http://registry.test")
        client.app = app  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield open_
    for client in clients:
        await client.aclose()
