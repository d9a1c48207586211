"""`auth.mode: basic`: every rule, header and error of the access check, in process."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from registry.auth import htpasswd
from tests.support.auth import basic, push_blob, remove_user, write_users

ALICE = basic("alice", "alice-pw")
BOB = basic("bob", "bob-pw")
ROOT = basic("root", "root-pw")
API_VERSION = ("docker-distribution-api-version", "registry/2.0")


def error_code(response: httpx.Response) -> str:
    return response.json()["errors"][0]["code"]


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith('Basic realm="Dockyard"')
    assert error_code(response) == "UNAUTHORIZED"
    assert response.headers[API_VERSION[0]] == API_VERSION[1]


@pytest.fixture
def client(make_config, open_client) -> httpx.AsyncClient:
    return open_client(make_config("basic"))


async def test_api_base_needs_credentials_even_with_anonymous_pull(client) -> None:
    assert_unauthorized(await client.get("/v2/"))
    response = await client.get("/v2/", headers=ALICE)
    assert response.status_code == 200
    assert response.headers[API_VERSION[0]] == API_VERSION[1]


async def test_wrong_password_and_unknown_user_are_refused(client) -> None:
    long = "é" * 40  # 80 bytes: more than bcrypt takes
    for headers in (
        basic("alice", "wrong"),
        basic("nobody", "alice-pw"),
        basic("", "pw"),
        basic("alice", long),
        basic("alice", "alice-pw" + "x" * 100),
    ):
        response = await client.get("/v2/", headers=headers)
        assert_unauthorized(response)
        assert response.json()["errors"][0]["message"] == "invalid username or password"


@pytest.mark.parametrize(
    "value", ["Basic !!!", "Basic " + "YWxpY2U=", "Bearer abc", "Basic", "Digest x", "Basic é"]
)
async def test_malformed_credentials_are_refused(client, value: str) -> None:
    assert_unauthorized(await client.get("/v2/", headers={"Authorization": value.encode()}))


async def test_anonymous_pull_only_where_allowed(client) -> None:
    # Allowed: the request reaches the endpoint (unknown manifest), not the access check.
    response = await client.get("/v2/public/tools/manifests/latest")
    assert response.status_code == 404 and error_code(response) == "MANIFEST_UNKNOWN"
    response = await client.get("/v2/public/deep/er/tags/list", headers=basic("", ""))
    assert response.status_code == 404 and error_code(response) == "NAME_UNKNOWN"
    assert_unauthorized(await client.get("/v2/team/app/manifests/latest"))
    # Anonymous pull never means anonymous push.
    assert_unauthorized(await client.post("/v2/public/tools/blobs/uploads/"))


async def test_unauthorized_body_names_the_needed_access(client) -> None:
    response = await client.head("/v2/team/app/blobs/sha256:" + "a" * 64)
    assert response.status_code == 401
    response = await client.get("/v2/team/app/tags/list")
    detail = response.json()["errors"][0]["detail"]
    assert detail == [{"Type": "repository", "Name": "team/app", "Action": "pull"}]


async def test_push_denied_by_rules_is_403(client) -> None:
    await push_blob(client, "team/app", b"layer", ALICE)
    response = await client.get("/v2/team/app/tags/list", headers=BOB)
    assert response.status_code == 200  # bob may pull team/*
    response = await client.post("/v2/team/app/blobs/uploads/", headers=BOB)
    assert response.status_code == 403
    assert error_code(response) == "DENIED"
    assert response.headers[API_VERSION[0]] == API_VERSION[1]
    # `*` stays within one path component: bob may not even pull team/a/b.
    response = await client.get("/v2/team/a/b/tags/list", headers=BOB)
    assert response.status_code == 403


async def test_denied_requests_touch_no_storage(client) -> None:
    store = client.app.state.store
    await client.post("/v2/team/app/blobs/uploads/", headers=BOB, content=b"x" * 1000)
    await client.put("/v2/team/app/manifests/v1", headers=BOB, content=b"{}")
    await client.post("/v2/team/other/blobs/uploads/", content=b"x")
    assert await store.catalog.names() == []


async def test_delete_needs_the_delete_action(client) -> None:
    digest = await push_blob(client, "team/app", b"layer", ALICE)
    response = await client.delete(f"/v2/team/app/blobs/{digest}", headers=ALICE)
    assert response.status_code == 403 and error_code(response) == "DENIED"
    response = await client.delete(f"/v2/team/app/blobs/{digest}", headers=ROOT)
    assert response.status_code == 202


async def test_user_namespace_and_everyone_rule(client) -> None:
    await push_blob(client, "bob/tools", b"mine", BOB)
    response = await client.post("/v2/alice/tools/blobs/uploads/", headers=BOB)
    assert response.status_code == 403
    await push_blob(client, "shared/x", b"anyone", BOB)


async def test_no_reading_across_repositories(client) -> None:
    digest = await push_blob(client, "alice/secret", b"alice's layer", ALICE)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}
    response = await client.put(
        "/v2/alice/secret/manifests/v1",
        json={**manifest, "manifests": []},
        headers={**ALICE, "Content-Type": manifest["mediaType"]},
    )
    assert response.status_code == 201
    for path in (f"/v2/alice/secret/blobs/{digest}", "/v2/alice/secret/manifests/v1"):
        assert (await client.get(path, headers=BOB)).status_code == 403
    # Through a repository bob may read: the blob is stored once, but not linked there.
    response = await client.get(f"/v2/shared/x/blobs/{digest}", headers=BOB)
    assert response.status_code == 404 and error_code(response) == "BLOB_UNKNOWN"
    response = await client.get("/v2/shared/x/manifests/v1", headers=BOB)
    assert response.status_code == 404


async def test_catalog_lists_only_pullable_repositories(client) -> None:
    for name in ("team/app", "alice/private", "public/tool", "shared/x"):
        await push_blob(client, name, b"data", ROOT)
    assert_unauthorized(await client.get("/v2/_catalog"))
    response = await client.get("/v2/_catalog", headers=BOB)
    assert response.json() == {"repositories": ["public/tool", "shared/x", "team/app"]}
    response = await client.get("/v2/_catalog", headers=ROOT)
    assert len(response.json()["repositories"]) == 4
    # Pagination counts only what the caller sees.
    response = await client.get("/v2/_catalog", params={"n": 1}, headers=BOB)
    assert response.json() == {"repositories": ["public/tool"]}
    assert "last=public/tool" in response.headers["link"]


async def test_cross_repository_mount_needs_pull_on_the_source(client) -> None:
    digest = await push_blob(client, "alice/secret", b"secret layer", ALICE)
    # bob may push shared/x but not pull alice/secret: no mount, an ordinary upload instead.
    params = {"mount": digest, "from": "alice/secret"}
    response = await client.post("/v2/shared/x/blobs/uploads/", params=params, headers=BOB)
    assert response.status_code == 202
    assert "Docker-Upload-UUID" in response.headers
    response = await client.head(f"/v2/shared/x/blobs/{digest}", headers=BOB)
    assert response.status_code == 404
    # Mount without `from` would search every repository: not honoured either.
    response = await client.post(
        "/v2/shared/x/blobs/uploads/", params={"mount": digest}, headers=BOB
    )
    assert response.status_code == 202
    # alice may pull her own repository: the mount happens.
    response = await client.post("/v2/shared/x/blobs/uploads/", params=params, headers=ALICE)
    assert response.status_code == 201
    assert response.headers["docker-content-digest"] == digest


def from_address(client: httpx.AsyncClient, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=client.app, client=(address, 1))  # type: ignore[attr-defined]
    return httpx.AsyncClient(transport=transport, base_url="http://registry.test")


async def test_throttling_after_repeated_failures(make_config, open_client) -> None:
    client = open_client(make_config("basic", throttle={"max_failures": 3, "base_delay": 30}))
    for _ in range(3):
        assert (await client.get("/v2/", headers=basic("alice", "guess"))).status_code == 401
    for headers in (basic("alice", "guess"), ALICE):  # even the right password waits
        response = await client.get("/v2/", headers=headers)
        assert response.status_code == 429
        assert error_code(response) == "TOOMANYREQUESTS"
        assert 1 <= int(response.headers["retry-after"]) <= 30
        assert response.headers[API_VERSION[0]] == API_VERSION[1]
    # Guessing one user's password does not stop another user at the same address.
    assert (await client.get("/v2/", headers=BOB)).status_code == 200


async def test_spraying_users_from_one_address_is_throttled(make_config, open_client) -> None:
    throttle = {"max_failures": 3, "address_max_failures": 3, "base_delay": 30}
    client = open_client(make_config("basic", throttle=throttle))
    for user in ("alice", "bob", "carol"):  # one guess each
        assert (await client.get("/v2/", headers=basic(user, "guess"))).status_code == 401
    assert (await client.get("/v2/", headers=ROOT)).status_code == 429
    async with from_address(client, "192.0.2.99") as other:
        assert (await other.get("/v2/", headers=ROOT)).status_code == 200


async def test_success_resets_the_failure_count(make_config, open_client) -> None:
    throttle = {"max_failures": 2, "base_delay": 30}
    client = open_client(make_config("basic", throttle=throttle, cache_ttl=0))  # every check runs
    for _ in range(5):
        assert (await client.get("/v2/", headers=basic("alice", "guess"))).status_code == 401
        assert (await client.get("/v2/", headers=ALICE)).status_code == 200


async def test_failures_from_one_address_do_not_lock_the_owner_out_elsewhere(
    make_config, open_client
) -> None:
    client = open_client(make_config("basic", throttle={"max_failures": 2, "base_delay": 30}))
    for _ in range(3):
        await client.get("/v2/", headers=basic("carol", "guess"))
    assert (await client.get("/v2/", headers=basic("carol", "carol-pw"))).status_code == 429
    async with from_address(client, "192.0.2.99") as other:
        assert (await other.get("/v2/", headers=basic("carol", "carol-pw"))).status_code == 200


async def test_spraying_one_user_from_many_addresses_spares_the_owners_address(
    make_config, open_client
) -> None:
    throttle = {"max_failures": 5, "user_max_failures": 3, "base_delay": 30}
    client = open_client(make_config("basic", throttle=throttle, cache_ttl=0))
    assert (await client.get("/v2/", headers=basic("carol", "carol-pw"))).status_code == 200
    for number in range(3):  # one guess from each of three addresses
        async with from_address(client, f"198.51.100.{number}") as attacker:
            assert (await attacker.get("/v2/", headers=basic("carol", "x"))).status_code == 401
    async with from_address(client, "198.51.100.200") as elsewhere:
        response = await elsewhere.get("/v2/", headers=basic("carol", "carol-pw"))
        assert response.status_code == 429
    # Where carol signed in before, she still can (no cache: the password is checked).
    response = await client.get("/v2/", headers=basic("carol", "carol-pw"))
    assert response.status_code == 200


@pytest.mark.parametrize("change", ["user removed", "password changed"])
async def test_users_file_changes_beat_the_cache(
    make_config, open_client, users_file: Path, monkeypatch, change: str
) -> None:
    monkeypatch.setattr(htpasswd, "RECHECK_SECONDS", 0.0)
    client = open_client(make_config("basic"))
    assert (await client.get("/v2/", headers=ALICE)).status_code == 200
    if change == "user removed":
        remove_user(users_file, "alice")
    else:
        write_users(users_file, {"alice": "new-pw"})
        assert (await client.get("/v2/", headers=basic("alice", "new-pw"))).status_code == 200
    assert (await client.get("/v2/", headers=ALICE)).status_code == 401


async def test_verified_credentials_are_cached(make_config, open_client, monkeypatch) -> None:
    from registry.auth import credentials

    calls = []
    real = credentials.check_password
    monkeypatch.setattr(credentials, "check_password", lambda *a: calls.append(1) or real(*a))
    client = open_client(make_config("basic"))
    for _ in range(5):
        assert (await client.get("/v2/", headers=ALICE)).status_code == 200
    assert len(calls) == 1
    for _ in range(2):  # failures are never cached
        await client.get("/v2/", headers=basic("alice", "nope"))
    assert len(calls) == 3


async def test_no_access_control_by_default(open_client) -> None:
    from registry.config import Config

    client = open_client(Config())
    assert (await client.get("/v2/")).status_code == 200
    assert (await client.post("/v2/any/blobs/uploads/")).status_code == 202


async def test_default_rules_let_every_user_do_everything(
    open_client, users_file: Path, tmp_path: Path
) -> None:
    from registry.config import Config

    config = Config(auth={"mode": "basic", "htpasswd": str(users_file)})
    client = open_client(config)
    digest = await push_blob(client, "any/thing", b"x", BOB)
    assert (await client.delete(f"/v2/any/thing/blobs/{digest}", headers=BOB)).status_code == 202
    assert_unauthorized(await client.get("/v2/any/thing/tags/list"))


async def test_every_path_is_guarded_even_below_a_root_path(make_config, open_client) -> None:
    client = open_client(make_config("basic"))
    transport = httpx.ASGITransport(app=client.app, root_path="/registry")
    async with httpx.AsyncClient(transport=transport, base_url="http://r.test") as mounted:
        response = await mounted.post("/registry/v2/team/app/blobs/uploads/")
        assert response.status_code == 401
        assert (await mounted.get("/registry/v2/", headers=ALICE)).status_code == 200
    assert_unauthorized(await client.get("/elsewhere"))
    assert (await client.get("/elsewhere", headers=ALICE)).status_code == 404
