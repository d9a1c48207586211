"""immutable_tags: a matching tag never moves to another manifest and is never deleted."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from registry import immutable_tags
from registry.config import Config, ImmutableTagRule
from tests.api.helpers import OCI_MANIFEST, error_code, push_image, put_manifest

RULE = "immutable_tags[1] (repositories: team/**; tags: v*, /rc-[0-9]+/)"


@pytest.fixture
def config() -> Config:
    return Config.model_validate(
        {
            "immutable_tags": [
                {"repositories": ["other/**"], "tags": ["*"]},
                {"repositories": ["team/**"], "tags": ["v*", "/rc-[0-9]+/"]},
            ],
        }
    )


def message(response: httpx.Response) -> str:
    assert response.status_code == 403, response.text
    assert error_code(response) == "DENIED"
    return response.json()["errors"][0]["message"]


async def test_pushing_another_manifest_to_an_immutable_tag_is_denied(
    client: httpx.AsyncClient,
) -> None:
    first, _ = await push_image(client, "team/app", "v1", seed="first")
    _, other = await push_image(client, "team/app", "scratch", seed="second")
    response = await put_manifest(client, "team/app", "v1", other, OCI_MANIFEST)
    assert RULE in message(response)
    assert "v1" in message(response)
    got = await client.get("/v2/team/app/manifests/v1")
    assert got.headers["Docker-Content-Digest"] == first


async def test_of_two_pushes_racing_to_a_new_immutable_tag_exactly_one_wins(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, first = await push_image(client, "team/app", "scratch-1", seed="first")
    _, second = await push_image(client, "team/app", "scratch-2", seed="second")
    both_checked = asyncio.Barrier(2)
    check_push = immutable_tags.check_push

    async def check_then_wait(*args: Any) -> set[str]:
        immutable = await check_push(*args)
        await both_checked.wait()  # each passed the check before either writes the tag
        return immutable

    monkeypatch.setattr(immutable_tags, "check_push", check_then_wait)
    answers = await asyncio.gather(
        *(put_manifest(client, "team/app", "v9", raw, OCI_MANIFEST) for raw in (first, second))
    )
    monkeypatch.undo()
    assert sorted(answer.status_code for answer in answers) == [201, 403], answers
    won = next(answer for answer in answers if answer.status_code == 201)
    lost = next(answer for answer in answers if answer.status_code == 403)
    assert error_code(lost) == "DENIED" and "immutable" in lost.json()["errors"][0]["message"]
    got = await client.get("/v2/team/app/manifests/v9", headers={"Accept": OCI_MANIFEST})
    assert got.headers["Docker-Content-Digest"] == won.headers["Docker-Content-Digest"]
    pushed_again = await put_manifest(client, "team/app", "v9", got.content, OCI_MANIFEST)
    assert pushed_again.status_code == 201  # the winner's retry still succeeds


async def test_a_tag_given_with_the_digest_push_is_checked_too(client: httpx.AsyncClient) -> None:
    await push_image(client, "team/app", "rc-1", seed="first")
    digest, other = await push_image(client, "team/app", "scratch", seed="second")
    response = await put_manifest(client, "team/app", f"{digest}?tag=rc-1", other, OCI_MANIFEST)
    assert RULE in message(response)


async def test_pushing_the_same_manifest_again_is_fine(client: httpx.AsyncClient) -> None:
    _, raw = await push_image(client, "team/app", "v1")
    response = await put_manifest(client, "team/app", "v1", raw, OCI_MANIFEST)
    assert response.status_code == 201


async def test_deleting_an_immutable_tag_is_denied(client: httpx.AsyncClient) -> None:
    await push_image(client, "team/app", "v1")
    assert RULE in message(await client.delete("/v2/team/app/manifests/v1"))
    assert (await client.get("/v2/team/app/manifests/v1")).status_code == 200


async def test_deleting_the_manifest_of_an_immutable_tag_is_denied(
    client: httpx.AsyncClient,
) -> None:
    digest, raw = await push_image(client, "team/app", "v1")
    assert (await put_manifest(client, "team/app", "mutable", raw, OCI_MANIFEST)).status_code == 201
    assert RULE in message(await client.delete(f"/v2/team/app/manifests/{digest}"))
    assert (await client.get("/v2/team/app/manifests/v1")).status_code == 200


async def test_other_tags_and_repositories_are_not_affected(client: httpx.AsyncClient) -> None:
    digest, _ = await push_image(client, "team/app", "latest", seed="first")
    _, other = await push_image(client, "team/app", "scratch", seed="second")
    assert (
        await put_manifest(client, "team/app", "latest", other, OCI_MANIFEST)
    ).status_code == 201
    assert (await client.delete("/v2/team/app/manifests/latest")).status_code == 202
    assert (await client.delete(f"/v2/team/app/manifests/{digest}")).status_code == 202
    await push_image(client, "prod/app", "v1", seed="first")
    _, other = await push_image(client, "prod/app", "scratch", seed="second")
    assert (await put_manifest(client, "prod/app", "v1", other, OCI_MANIFEST)).status_code == 201


async def test_deleting_a_missing_immutable_tag_is_not_found(client: httpx.AsyncClient) -> None:
    response = await client.delete("/v2/team/app/manifests/v9")
    assert response.status_code == 404
    assert error_code(response) == "MANIFEST_UNKNOWN"


async def test_without_rules_nothing_is_immutable(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    app.state.config.immutable_tags = []
    await push_image(client, "team/app", "v1", seed="first")
    _, other = await push_image(client, "team/app", "scratch", seed="second")
    assert (await put_manifest(client, "team/app", "v1", other, OCI_MANIFEST)).status_code == 201
    assert (await client.delete("/v2/team/app/manifests/v1")).status_code == 202


def test_rules_are_validated() -> None:
    with pytest.raises(ValueError, match="regular expression"):
        ImmutableTagRule(repositories=["**"], tags=["/(/"])
