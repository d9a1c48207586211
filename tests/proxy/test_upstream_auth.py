"""Upstreams that ask for credentials: the docker token flow (a Dockyard in token mode)
with configured credentials or a docker config.json, and basic auth."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from registry.app import create_app
from registry.config import Config, ConfigError
from storage.memory import MemoryDriver
from tests.api.helpers import push_image
from tests.proxy.conftest import UPSTREAM_URL, CacheFactory, UpstreamTransport, upstream_config
from tests.proxy.test_pull_through import pull
from tests.support.auth import basic, write_users

RULES = [{"repositories": ["**"], "users": ["mirror"], "actions": ["pull", "push"]}]


@pytest.fixture(params=["token", "basic"])
async def upstream(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """An upstream where only the user `mirror` may pull; the client pushes as `mirror`."""
    users = write_users(tmp_path / "htpasswd", {"mirror": "mirror-pw"})
    auth = {"mode": request.param, "htpasswd": str(users), "rules": RULES}
    config = Config(auth=auth, storage={"filesystem": {"root": str(tmp_path / "upstream")}})
    app = create_app(config, MemoryDriver())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=UPSTREAM_URL) as client:
        client.app = app  # type: ignore[attr-defined]
        client.headers.update(basic("mirror", "mirror-pw"))
        if request.param == "token":
            scope = "repository:team/app:pull,push"
            answer = await client.get("/auth/token", params={"service": "dockyard", "scope": scope})
            client.headers["Authorization"] = f"Bearer {answer.json()['token']}"
        yield client


async def test_configured_credentials_pull_and_tokens_are_reused(
    upstream: httpx.AsyncClient, transport: UpstreamTransport, open_cache: CacheFactory
) -> None:
    digest, manifest = await push_image(upstream, "team/app", "1", seed="private")
    await push_image(upstream, "team/app", "2", seed="another")
    cache = open_cache(upstream_config(username="mirror", password="mirror-pw", tag_ttl=0))
    assert await pull(cache, "hub/team/app", "1") == (digest, manifest)
    assert (await pull(cache, "hub/team/app", "2"))[0] != digest
    assert await pull(cache, "hub/team/app", "1") == (digest, manifest)  # revalidated
    mode = upstream.app.state.config.auth.mode  # type: ignore[attr-defined]
    # token: one token for the scope, reused by every later request; basic: none asked
    assert transport.count("GET", "/auth/token") == (1 if mode == "token" else 0)


async def test_a_docker_config_json_gives_the_credentials(
    upstream: httpx.AsyncClient, open_cache: CacheFactory, tmp_path: Path
) -> None:
    digest, _ = await push_image(upstream, "team/app", "1", seed="private")
    auth = base64.b64encode(b"mirror:mirror-pw").decode()
    config_json = tmp_path / "config.json"
    config_json.write_text(json.dumps({"auths": {"upstream.test": {"auth": auth}}}))
    cache = open_cache(upstream_config(credentials_file=str(config_json)))
    assert (await pull(cache, "hub/team/app", "1"))[0] == digest


async def test_without_credentials_the_error_says_the_upstream_refused(
    upstream: httpx.AsyncClient, open_cache: CacheFactory
) -> None:
    await push_image(upstream, "team/app", "1", seed="private")
    cache = open_cache()
    response = await cache.get("/v2/hub/team/app/manifests/1")
    assert response.status_code == 424
    message = response.json()["errors"][0]["message"]
    assert message.startswith("upstream hub (http://upstream.test): ")
    if upstream.app.state.config.auth.mode == "token":  # type: ignore[attr-defined]
        assert "refused access (401): no such repository, or our credentials" in message
    else:
        assert message.endswith("asks for credentials and none are configured")


def test_an_unusable_credentials_file_stops_the_start(tmp_path: Path) -> None:
    from proxy.credentials import check_credentials

    other = tmp_path / "config.json"
    other.write_text(json.dumps({"auths": {"elsewhere.test": {"auth": "eDp5"}}}))
    for path, expected in [
        (tmp_path / "missing.json", "cannot read"),
        (other, "no `auths` entry for upstream.test"),
    ]:
        config = Config(proxy={"upstreams": [upstream_config(credentials_file=str(path))]})
        with pytest.raises(ConfigError, match=expected) as raised:
            check_credentials(config.proxy)
        assert "proxy.upstreams[0].credentials_file" in str(raised.value)
