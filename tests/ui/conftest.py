"""Fixtures for the web UI's in-process tests: an app in basic mode (the access tests'
users and rules), a browser-like client for /ui/ and an API client that pushes as root."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from registry.app import create_app
from registry.config import Config
from storage.memory import MemoryDriver
from tests.auth.conftest import RULES, USERS, make_config, users_file  # noqa: F401
from tests.support.auth import basic

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Ui:
    """A browser (cookies kept) and an API client (root's credentials) on one app."""

    browser: httpx.AsyncClient
    api: httpx.AsyncClient
    app: Any


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no CSRF token in the page"
    return match[1]


async def sign_in(browser: httpx.AsyncClient, user: str) -> httpx.Response:
    page = await browser.get("/ui/login")
    form = {"username": user, "password": USERS[user], "csrf": csrf_of(page.text), "next": "/ui/"}
    response = await browser.post("/ui/login", data=form)
    assert response.status_code == 303, response.text
    return response


@pytest.fixture
async def open_ui() -> AsyncIterator[Callable[..., Ui]]:
    clients: list[httpx.AsyncClient] = []

    def open_(config: Config, base_url: str = "http://registry.test") -> Ui:
        app = create_app(config, MemoryDriver())
        transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 4321))
        browser = httpx.AsyncClient(transport=transport, base_url=base_url)
        api = httpx.AsyncClient(
            transport=transport, base_url=base_url, headers=basic("root", USERS["root"])
        )
        clients.extend((browser, api))
        return Ui(browser, api, app)

    yield open_
    for client in clients:
        await client.aclose()


@pytest.fixture
def ui(make_config: Callable[..., Config], open_ui: Callable[..., Ui]) -> Ui:  # noqa: F811
    return open_ui(make_config("basic"))
