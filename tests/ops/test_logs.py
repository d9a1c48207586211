"""Request ids, JSON access lines and JSON log records, in process."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.config
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry import request_id
from registry.app import create_app
from registry.config import Config, LogConfig
from registry.logs import log_config
from storage.memory import MemoryDriver
from tests.support.auth import basic, write_users


def open_client(config: Config) -> httpx.AsyncClient:
    app = create_app(config, MemoryDriver())
    transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 4321))
    return httpx.AsyncClient(transport=transport, base_url="http://registry.test")


async def test_every_response_has_a_request_id_the_clients_when_sane(tmp_path: Path) -> None:
    users = write_users(tmp_path / "htpasswd", {"alice": "pw"})
    config = Config(auth={"mode": "basic", "htpasswd": str(users)})
    async with open_client(config) as client:
        refused = await client.get("/v2/")  # answered by the access check, before routing
        missing = await client.get("/nowhere", headers=basic("alice", "pw"))
        given = await client.get("/healthz", headers={"X-Request-Id": "trace-42.a"})
        forged = await client.get("/healthz", headers={"X-Request-Id": "x\tforged line"})
        again = await client.get("/healthz")
    assert refused.status_code == 401 and missing.status_code == 404
    ids = [r.headers["x-request-id"] for r in (refused, missing, forged, again)]
    assert all(len(i) == 16 for i in ids) and len(set(ids)) == 4
    assert given.headers["x-request-id"] == "trace-42.a"
    answers = (refused, missing, given, forged, again)  # the same layer adds the version
    assert {r.headers["docker-distribution-api-version"] for r in answers} == {"registry/2.0"}


def test_new_request_ids_differ_across_processes() -> None:
    """Workers share one log: a forked process numbers its ids under a prefix of its own."""
    parent = [request_id.request_id({"headers": []}) for _ in range(3)]
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        os.write(writing, request_id.request_id({"headers": []}).encode())
        os._exit(0)
    os.close(writing)
    os.waitpid(child, 0)
    from_child = os.read(reading, 64).decode()
    os.close(reading)
    assert len(set(parent)) == 3 and from_child not in parent
    assert from_child[:8] != parent[0][:8] and len(from_child) == 16


class BrokenDriver(MemoryDriver):
    async def get(self, key: str) -> bytes:
        raise RuntimeError("a bug")


async def test_an_unexpected_error_keeps_the_request_id() -> None:
    app = create_app(Config(), BrokenDriver())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        headers = {"X-Request-Id": "bug-7"}
        response = await client.get("/v2/team/app/manifests/v1", headers=headers)
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "bug-7"


async def json_lines(
    capsys: pytest.CaptureFixture[str],
    config: Config,
    *requests: tuple[str, str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """The access lines (on standard output) of `requests`, parsed."""
    capsys.readouterr()
    async with open_client(config) as client:
        for method, url, options in requests:
            await client.request(method, url, **options)
    await asyncio.sleep(0)  # the batch goes out once the loop has run what was ready
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


async def test_json_access_line_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    users = write_users(tmp_path / "htpasswd", {"alice": "alice-secret-pw"})
    config = Config(
        auth={"mode": "basic", "htpasswd": str(users)},
        log={"format": "json"},
        storage={"filesystem": {"root": str(tmp_path / "data")}},
    )
    headers = {**basic("alice", "alice-secret-pw"), "X-Request-Id": "req-1"}
    lines = await json_lines(
        capsys,
        config,
        ("GET", "/v2/team/app/manifests/v1?token=query-secret", {"headers": headers}),
        ("GET", "/v2/team/app/tags/list", {}),
    )
    assert len(lines) == 2
    found, refused = lines
    assert set(found) == {
        "time", "request_id", "client", "user", "method", "route", "repository",
        "status", "bytes", "duration",
    }  # fmt: skip
    assert found["request_id"] == "req-1"
    assert found["client"] == "192.0.2.7:4321"
    assert found["user"] == "alice"
    assert (found["method"], found["route"]) == ("GET", "/v2/{name}/manifests/{reference}")
    assert (found["repository"], found["status"]) == ("team/app", 404)
    assert found["bytes"] > 0 and found["duration"] >= 0
    # Refused before routing: still the route and repository, and no user.
    assert (refused["route"], refused["repository"]) == ("/v2/{name}/tags/list", "team/app")
    assert (refused["user"], refused["status"]) == (None, 401)
    text = json.dumps(lines)
    assert "alice-secret-pw" not in text and "query-secret" not in text
    assert basic("alice", "alice-secret-pw")["Authorization"].split()[1] not in text


async def test_text_access_line_stays_as_it_was(capsys: pytest.CaptureFixture[str]) -> None:
    async with open_client(Config()) as client:
        await client.get("/v2/")
    await asyncio.sleep(0)
    assert '"GET /v2/ HTTP/1.1" 200 ' in capsys.readouterr().out


def test_json_log_records() -> None:
    stream = io.StringIO()
    settings = log_config(LogConfig(level="debug", format="json"))
    settings["handlers"]["default"]["stream"] = stream
    logging.config.dictConfig(settings)
    try:
        logging.getLogger("dockyard.test").info("hello %s", "world")
        logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
        logging.getLogger("uvicorn.error").warning("another warning")
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["message"] for r in records] == ["hello world", "another warning"]
    assert records[0]["level"] == "info" and records[0]["logger"] == "dockyard.test"
    assert records[0]["time"].endswith("Z")
