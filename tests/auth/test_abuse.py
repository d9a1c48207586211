"""Access control under hostile use, in process: floods, timing, memory, secrets in logs."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import tracemalloc
from pathlib import Path

import bcrypt
import pytest

from registry.auth import credentials, htpasswd, tokens
from registry.auth.keys import load_or_create_signing_key
from registry.auth.scopes import Scope
from registry.auth.setup import build_access
from registry.auth.tokens import TokenSigner, TokenVerifier
from tests.support.auth import basic, bearer

ALICE = basic("alice", "alice-pw")


async def test_verified_users_proceed_while_a_bad_password_flood_holds_every_bcrypt_slot(
    make_config, open_client, monkeypatch
) -> None:
    monkeypatch.setattr(credentials, "LOGIN_THREADS", 2, raising=False)
    monkeypatch.setattr(credentials, "LOGIN_QUEUE", 3, raising=False)
    monkeypatch.setattr(htpasswd, "RECHECK_SECONDS", 0.0)  # every request looks at the file
    throttle = {"max_failures": 100}  # (and 20 per address by default: more than 12)
    client = open_client(make_config("basic", throttle=throttle))
    assert (await client.get("/v2/", headers=ALICE)).status_code == 200  # verified, cached

    real_checkpw = bcrypt.checkpw
    gate = threading.Event()
    inside: list[bytes] = []

    def held_checkpw(password: bytes, hashed: bytes) -> bool:
        inside.append(password)
        gate.wait(timeout=60)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", held_checkpw)
    flood = [
        asyncio.create_task(client.get("/v2/", headers=basic(f"guesser{n}", f"guess{n}")))
        for n in range(12)
    ]
    try:
        for _ in range(500):  # until the bcrypt threads are all taken
            if len(inside) >= 2:
                break
            await asyncio.sleep(0.01)
        assert len(inside) >= 2
        # Every slot is busy and held: requests with verified credentials still complete.
        verified = await asyncio.wait_for(
            asyncio.gather(*(client.get("/v2/", headers=ALICE) for _ in range(5))), timeout=20
        )
        assert [response.status_code for response in verified] == [200] * 5
        # Every flood request has met the pool before any slot frees: seven turned away.
        for _ in range(500):
            if sum(task.done() for task in flood) >= 7:
                break
            await asyncio.sleep(0.01)
        assert sum(task.done() for task in flood) == 7
        assert len(inside) == 2 and not gate.is_set()
    finally:
        gate.set()
    statuses = sorted(response.status_code for response in await asyncio.gather(*flood))
    # Two running, three waiting: checked and refused; the rest turned away at once.
    assert statuses == [401] * 5 + [429] * 7
    busy = [r for r in (t.result() for t in flood) if r.status_code == 429]
    assert all(r.json()["errors"][0]["code"] == "TOOMANYREQUESTS" for r in busy)
    assert all(r.headers["retry-after"] == "1" for r in busy)


async def test_unknown_users_are_checked_at_the_cost_of_the_users_file(
    make_config, open_client, users_file: Path, monkeypatch
) -> None:
    assert all(hashed.startswith("$2b$04$") for hashed in htpasswd.read(users_file).values())
    checked: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def recording_checkpw(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed[:7])
        return real_checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", recording_checkpw)
    client = open_client(make_config("basic"))
    for name in ("alice", "nobody"):
        assert (await client.get("/v2/", headers=basic(name, "wrong"))).status_code == 401
    assert checked == [b"$2b$04$", b"$2b$04$"]


def test_typical_cost_is_the_most_common_one() -> None:
    hashes = {"a": "$2b$05$" + "x" * 53, "b": "$2y$05$" + "y" * 53, "c": "$2b$12$" + "z" * 53}
    assert htpasswd.typical_cost(hashes) == 5
    assert htpasswd.typical_cost({}) == htpasswd.DEFAULT_COST


def test_verified_token_cache_is_bounded_in_bytes(tmp_path: Path, monkeypatch) -> None:
    budget = 4 << 20
    monkeypatch.setattr(tokens, "CACHE_BYTES", budget, raising=False)
    key = load_or_create_signing_key(tmp_path / "key.pem")
    signer = TokenSigner(key, "dockyard", "dockyard", 300, 600)
    verifier = TokenVerifier([key.verification_key()], "dockyard", "dockyard")
    scopes = [
        Scope("repository", f"public/{n:04d}-{'x' * 40}", frozenset({"pull"})) for n in range(400)
    ]
    # Each token is about 56 KB and holds about 270 KB once verified: 32 MB for all.
    issued = [signer.access_token("", scopes).token for _ in range(120)]
    assert all(len(token) < 64 << 10 for token in issued)  # accepted by size
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for token in issued:
            verifier.verify_access(token)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 2 * budget, f"the cache grew by {grown >> 20} MiB"
    assert verifier.verify_access(issued[-1]).allows(scopes[0])  # the newest are still there


async def test_no_secret_reaches_a_log(make_config, open_client, caplog, capsys) -> None:
    caplog.set_level(logging.DEBUG)
    config = make_config("token")
    client = open_client(config)
    secrets = ["alice-pw", "bob-pw", "not-bobs-password"]
    for name, password in (("alice", "alice-pw"), ("bob", "not-bobs-password")):
        params = {"service": "dockyard", "scope": "repository:team/app:pull"}
        await client.get("/auth/token", params=params, headers=basic(name, password))
    form = {"grant_type": "password", "username": "bob", "password": "bob-pw"}
    form |= {"access_type": "offline", "scope": "repository:team/app:pull"}
    body = (await client.post("/auth/token", data=form)).json()
    secrets += [body["access_token"], body["refresh_token"]]
    refresh = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    secrets.append((await client.post("/auth/token", data=refresh)).json()["access_token"])
    await client.get("/v2/team/app/tags/list", headers=bearer(body["access_token"]))
    forged = body["access_token"][:-4] + "AAAA"
    secrets.append(forged)
    await client.get("/v2/team/app/tags/list", headers=bearer(forged))
    basic_mode = open_client(make_config("basic"))
    for password in ("carol-pw", "not-carols"):
        headers = basic("carol", password)
        await basic_mode.get("/v2/", headers=headers)
        secrets += [password, headers["Authorization"].split()[1]]
    logged = caplog.text + capsys.readouterr().out
    assert "failed login" in logged and "/auth/token" in logged  # the logs were captured
    for secret in secrets:
        assert secret not in logged
    assert "PRIVATE KEY" not in logged and "Authorization" not in logged


@pytest.mark.parametrize("name", ["ALICE", "Alice", "bob@corp", "a..b", "a-"])
def test_a_users_file_with_a_name_that_cannot_own_its_namespace_is_refused(
    name: str, make_config, users_file: Path
) -> None:
    text = users_file.read_text() + f"{name}:{htpasswd.hash_password('pw', 4)}\n"
    users_file.write_text(text)
    with pytest.raises(htpasswd.HtpasswdError, match=f"{users_file}:5: invalid user name"):
        build_access(make_config("basic"))
