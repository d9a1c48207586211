"""`auth.mode: token`: the challenge, the token endpoint (GET and OAuth2 POST), and attacks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from registry.auth import htpasswd
from registry.auth.keys import SigningKey, load_or_create_signing_key
from registry.auth.setup import signing_key_path
from tests.support.auth import basic, bearer, push_blob, remove_user, write_users

TOKEN_URL = "/auth/token"


def error_code(response: httpx.Response) -> str:
    return response.json()["errors"][0]["code"]


@pytest.fixture
def config(make_config):
    return make_config("token")


@pytest.fixture
def client(config, open_client) -> httpx.AsyncClient:
    return open_client(config)


@pytest.fixture
def signing_key(config, client) -> SigningKey:
    return load_or_create_signing_key(signing_key_path(config))


async def get_token(client: httpx.AsyncClient, user: str | None, *scopes: str, **extra) -> dict:
    headers = basic(user, f"{user}-pw") if user else {}
    params: list[tuple[str, str]] = [("service", "dockyard"), *(("scope", s) for s in scopes)]
    params += list(extra.items())
    response = await client.get(TOKEN_URL, params=params, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def forge(key: SigningKey, **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": "dockyard",
        "sub": "alice",
        "aud": "dockyard",
        "exp": now + 300,
        "nbf": now,
        "iat": now,
        "jti": "x",
        "access": [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}],
    }
    claims.update(overrides)
    return jwt.encode(claims, key.private, "ES256", {"kid": key.kid})


async def test_challenge_names_realm_service_and_scope(client) -> None:
    response = await client.get("/v2/")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        'Bearer realm="http://registry.test/auth/token",service="dockyard"'
    )
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    response = await client.post("/v2/team/app/blobs/uploads/")
    assert response.headers["www-authenticate"] == (
        'Bearer realm="http://registry.test/auth/token",service="dockyard",'
        'scope="repository:team/app:pull,push"'
    )
    assert error_code(response) == "UNAUTHORIZED"
    response = await client.get("/v2/team/app/manifests/1")
    assert 'scope="repository:team/app:pull"' in response.headers["www-authenticate"]


@pytest.mark.parametrize(
    "path",
    [
        "/v2/a%C4%80b/manifests/1",  # not latin-1: the header could not be written (500)
        '/v2/x",realm="http://evil.example/t/manifests/1',  # would add a second realm
        "/v2/a%0Db/tags/list",  # a carriage return in a header: uvicorn refuses it (500)
    ],
)
async def test_invalid_repository_name_never_reaches_the_challenge(client, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 400, response.text
    assert error_code(response) == "NAME_INVALID"
    assert "www-authenticate" not in response.headers


async def test_invalid_mount_source_is_left_out_of_the_challenge(client) -> None:
    digest = "sha256:" + "0" * 64
    response = await client.post(
        f'/v2/team/app/blobs/uploads/?mount={digest}&from=x",realm="http://evil.example/t'
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        'Bearer realm="http://registry.test/auth/token",service="dockyard",'
        'scope="repository:team/app:pull,push"'
    )


@pytest.mark.parametrize(
    ("host", "realm_host"),
    [
        ("reg.example:5000", "reg.example:5000"),
        ("[::1]:5000", "[::1]:5000"),
        ('a"b\x01', "localhost"),
    ],
)
async def test_realm_follows_the_host_but_only_a_clean_one(client, host, realm_host) -> None:
    response = await client.get("/v2/", headers={"Host": host})
    assert f'realm="http://{realm_host}/auth/token"' in response.headers["www-authenticate"]


async def test_configured_realm_is_used(make_config, open_client) -> None:
    client = open_client(make_config("token", token={"realm": "https://auth.example/token"}))
    response = await client.get("/v2/")
    assert 'realm="https://auth.example/token"' in response.headers["www-authenticate"]


async def test_token_grants_what_was_asked_and_allowed(client) -> None:
    body = await get_token(client, "alice", "repository:team/app:pull,push")
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300 and body["issued_at"].endswith("Z")
    claims = claims_of(body["token"])
    assert claims["sub"] == "alice" and claims["aud"] == "dockyard" and claims["iss"] == "dockyard"
    assert claims["access"] == [
        {"type": "repository", "name": "team/app", "actions": ["pull", "push"]}
    ]
    assert jwt.get_unverified_header(body["token"])["alg"] == "ES256"
    headers = bearer(body["token"])
    assert (await client.get("/v2/", headers=headers)).status_code == 200
    await push_blob(client, "team/app", b"layer", headers)
    assert (await client.get("/v2/team/app/tags/list", headers=headers)).status_code == 200


async def test_escalated_scope_is_narrowed_and_push_denied(client) -> None:
    body = await get_token(client, "bob", "repository:team/app:pull,push,delete")
    assert claims_of(body["token"])["access"] == [
        {"type": "repository", "name": "team/app", "actions": ["pull"]}
    ]
    response = await client.post("/v2/team/app/blobs/uploads/", headers=bearer(body["token"]))
    assert response.status_code == 403 and error_code(response) == "DENIED"
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert 'scope="repository:team/app:pull,push"' in response.headers["www-authenticate"]
    body = await get_token(client, "bob", "repository:team/app:*")
    assert claims_of(body["token"])["access"][0]["actions"] == ["pull"]


async def test_token_for_another_repository_is_refused(client) -> None:
    body = await get_token(client, "alice", "repository:team/other:pull,push")
    response = await client.get("/v2/team/app/tags/list", headers=bearer(body["token"]))
    assert response.status_code == 403


async def test_anonymous_token_pulls_public_only(client) -> None:
    body = await get_token(client, None, "repository:public/x:pull,push", "repository:team/a:pull")
    assert claims_of(body["token"])["access"] == [
        {"type": "repository", "name": "public/x", "actions": ["pull"]}
    ]
    assert claims_of(body["token"])["sub"] == ""
    headers = bearer(body["token"])
    response = await client.get("/v2/public/x/manifests/1", headers=headers)
    assert response.status_code == 404 and error_code(response) == "MANIFEST_UNKNOWN"
    response = await client.get("/v2/team/a/manifests/1", headers=headers)
    assert response.status_code == 401  # not signed in: asked to sign in, not denied
    assert "refresh_token" not in await get_token(client, None, offline_token="true")
    response = await client.get(
        TOKEN_URL, params={"scope": "repository:public/x:pull"}, headers=basic("", "")
    )
    assert claims_of(response.json()["token"])["sub"] == ""


async def test_token_endpoint_refuses_wrong_password_and_service(client) -> None:
    response = await client.get(TOKEN_URL, headers=basic("alice", "wrong"))
    assert response.status_code == 401 and error_code(response) == "UNAUTHORIZED"
    assert response.headers["www-authenticate"].startswith("Basic")
    response = await client.get(TOKEN_URL, params={"service": "elsewhere"})
    assert response.status_code == 400
    response = await client.get(TOKEN_URL, params={"scope": "nonsense"})
    assert response.status_code == 400


async def test_token_endpoint_is_throttled(make_config, open_client) -> None:
    client = open_client(make_config("token", throttle={"max_failures": 2, "base_delay": 30}))
    for _ in range(2):
        await client.get(TOKEN_URL, headers=basic("alice", "wrong"))
    response = await client.get(TOKEN_URL, headers=basic("alice", "alice-pw"))
    assert response.status_code == 429 and int(response.headers["retry-after"]) > 0
    form = {"grant_type": "password", "username": "alice", "password": "alice-pw"}
    assert (await client.post(TOKEN_URL, data=form)).status_code == 429


async def test_token_requests_are_bounded(client) -> None:
    scopes = [f"repository:public/app{n}:pull" for n in range(101)]
    params = [("service", "dockyard"), *(("scope", scope) for scope in scopes)]
    response = await client.get(TOKEN_URL, params=params)
    assert response.status_code == 400
    assert "too many scopes: 101 asked for, at most 100" in response.json()["errors"][0]["message"]
    form = {"grant_type": "password", "username": "alice", "password": "alice-pw"}
    response = await client.post(TOKEN_URL, data={**form, "scope": " ".join(scopes)})
    assert response.status_code == 400 and "too many scopes" in response.text
    # 100 scopes, but names so long that the token would be huge.
    long_names = [("scope", f"repository:public/{n}{'x' * 500}:pull") for n in range(100)]
    response = await client.get(TOKEN_URL, params=[("service", "dockyard"), *long_names])
    assert response.status_code == 400
    assert "ask for fewer or shorter scopes" in response.json()["errors"][0]["message"]
    assert len((await get_token(client, None, *scopes[:100]))["token"]) < 16 << 10


async def test_oversized_bearer_tokens_are_refused_unread(client, signing_key) -> None:
    access = [
        {"type": "repository", "name": f"team/{n}{'x' * 60}", "actions": ["pull"]}
        for n in range(1000)
    ]
    huge = forge(signing_key, access=access)
    assert len(huge) > 64 << 10
    response = await client.get("/v2/team/app/tags/list", headers=bearer(huge))
    assert response.status_code == 401 and "larger than" in response.text


async def test_scope_with_registry_port_in_name(client) -> None:
    body = await get_token(client, "alice", "repository:localhost:5000/team/app:pull")
    assert claims_of(body["token"])["access"] == []


async def test_catalog_scope_and_filtered_listing(client) -> None:
    root = bearer((await get_token(client, "root", "repository:team/app:push"))["token"])
    await push_blob(client, "team/app", b"x", root)
    root = bearer((await get_token(client, "root", "repository:alice/p:push"))["token"])
    await push_blob(client, "alice/p", b"x", root)
    without = await get_token(client, "bob", "repository:team/app:pull")
    response = await client.get("/v2/_catalog", headers=bearer(without["token"]))
    assert response.status_code == 403
    body = await get_token(client, "bob", "registry:catalog:*")
    assert claims_of(body["token"])["access"] == [
        {"type": "registry", "name": "catalog", "actions": ["*"]}
    ]
    response = await client.get("/v2/_catalog", headers=bearer(body["token"]))
    assert response.json() == {"repositories": ["team/app"]}
    anonymous = await get_token(client, None, "registry:catalog:*")
    assert claims_of(anonymous["token"])["access"] == []


async def test_oauth_password_and_refresh_grants(client) -> None:
    form = {
        "grant_type": "password",
        "username": "alice",
        "password": "alice-pw",
        "service": "dockyard",
        "client_id": "test",
        "access_type": "offline",
        "scope": "repository:team/app:pull repository:team/app:push",
    }
    response = await client.post(TOKEN_URL, data=form)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "repository:team/app:pull,push"
    refresh = body["refresh_token"]
    response = await client.post(
        TOKEN_URL,
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "service": "dockyard",
            "client_id": "test",
            "scope": "repository:shared/x:pull",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["refresh_token"] == refresh
    assert response.json()["scope"] == "repository:shared/x:pull"
    assert claims_of(response.json()["access_token"])["sub"] == "alice"
    response = await client.post(TOKEN_URL, data={**form, "password": "nope"})
    assert response.status_code == 401
    response = await client.post(TOKEN_URL, data={"grant_type": "authorization_code"})
    assert response.status_code == 400


async def refresh_grant(client: httpx.AsyncClient, refresh: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh, "service": "dockyard"}
    return await client.post(TOKEN_URL, data=form)


async def test_refresh_token_refused_after_user_removed(
    client, users_file: Path, monkeypatch
) -> None:
    monkeypatch.setattr(htpasswd, "RECHECK_SECONDS", 0.0)
    refresh = (await get_token(client, "alice", offline_token="true"))["refresh_token"]
    assert (await refresh_grant(client, refresh)).status_code == 200
    remove_user(users_file, "alice")
    response = await refresh_grant(client, refresh)
    assert response.status_code == 401
    assert "revoked" in response.json()["errors"][0]["message"]


async def test_refresh_token_refused_after_password_change(
    client, users_file: Path, monkeypatch
) -> None:
    monkeypatch.setattr(htpasswd, "RECHECK_SECONDS", 0.0)
    refresh = (await get_token(client, "bob", offline_token="true"))["refresh_token"]
    write_users(users_file, {"bob": "new-pw"})
    assert (await refresh_grant(client, refresh)).status_code == 401


async def test_refresh_and_access_tokens_are_not_interchangeable(client) -> None:
    body = await get_token(client, "alice", "repository:team/app:pull", offline_token="true")
    response = await client.get("/v2/", headers=bearer(body["refresh_token"]))
    assert response.status_code == 401
    assert (await refresh_grant(client, body["token"])).status_code == 401


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["access"][0]["name"] = "team/app"
    claims["access"][0]["actions"] = ["pull", "push", "delete"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _alg_none(key: SigningKey) -> str:
    token = forge(key)
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    return f"{header}.{token.split('.')[1]}."


def _hmac_with_public_key(key: SigningKey) -> str:
    public_pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    payload = claims_of(forge(key))

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    body = b64(json.dumps(payload).encode())
    signature = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


ATTACKS = {
    "expired": lambda key: forge(key, exp=int(time.time()) - 120, iat=int(time.time()) - 600),
    "not yet valid": lambda key: forge(key, nbf=int(time.time()) + 600),
    "other service": lambda key: forge(key, aud="another-registry"),
    "other issuer": lambda key: forge(key, iss="someone-else"),
    "alg none": _alg_none,
    "hmac with the public key": _hmac_with_public_key,
    "unknown key": lambda key: forge(
        SigningKey.from_pem(
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "attacker",
        )
    ),
    "no access claim": lambda key: forge(key, access=None),
    "malformed access": lambda key: forge(key, access=[{"type": "repository"}]),
    "garbage": lambda key: "not.a.token",
}


@pytest.mark.parametrize("attack", ATTACKS)
async def test_forged_tokens_are_refused(client, signing_key, attack: str) -> None:
    token = ATTACKS[attack](signing_key)
    response = await client.get("/v2/team/app/tags/list", headers=bearer(token))
    assert response.status_code == 401, attack
    assert error_code(response) == "UNAUTHORIZED"
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_tampered_signature_is_refused(client, signing_key) -> None:
    body = await get_token(client, "bob", "repository:team/app:pull")
    response = await client.get("/v2/team/app/tags/list", headers=bearer(body["token"]))
    assert response.status_code == 404  # through the access check
    tampered = bearer(_tamper(body["token"]))
    assert (await client.post("/v2/team/app/blobs/uploads/", headers=tampered)).status_code == 401
    # The control: the same claims, properly signed, are accepted.
    signed = bearer(forge(signing_key))
    assert (await client.post("/v2/team/app/blobs/uploads/", headers=signed)).status_code == 202


def test_signing_key_is_created_once_across_racing_workers(tmp_path: Path) -> None:
    path = tmp_path / "data" / "auth" / "key.pem"
    kids: list[str] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        kids.append(load_or_create_signing_key(path).kid)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(kids)) == 1
    assert load_or_create_signing_key(path).kid == kids[0]  # a restart reads the same key
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["key.pem"]


async def test_tokens_survive_a_restart(config, open_client) -> None:
    first = open_client(config)
    token = (await get_token(first, "alice", "repository:team/app:pull"))["token"]
    second = open_client(config)
    assert (await second.get("/v2/team/app/tags/list", headers=bearer(token))).status_code == 404


async def test_configured_signing_key(make_config, open_client, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    path = tmp_path / "mine.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    client = open_client(make_config("token", token={"signing_key": str(path)}))
    token = (await get_token(client, "alice", "repository:team/app:pull"))["token"]
    assert jwt.get_unverified_header(token)["alg"] == "ES384"
    jwt.decode(token, key.public_key(), ["ES384"], audience="dockyard")
    assert not (tmp_path / "data" / "auth").exists()


async def test_a_remembered_token_still_expires(client, signing_key, monkeypatch) -> None:
    from registry.auth import tokens

    monkeypatch.setattr(tokens, "LEEWAY_SECONDS", 0)
    token = bearer(forge(signing_key, exp=int(time.time()) + 1))
    assert (await client.get("/v2/team/app/tags/list", headers=token)).status_code == 404
    await asyncio.sleep(2.1)
    assert (await client.get("/v2/team/app/tags/list", headers=token)).status_code == 401
