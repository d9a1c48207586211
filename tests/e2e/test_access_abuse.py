"""Access control under hostile use, against real servers with two worker processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from registry.auth.keys import load_or_create_signing_key
from registry.auth.scopes import Scope
from registry.auth.tokens import TokenSigner
from tests.support.auth import write_users
from tests.support.server import RegistryProcess

pytestmark = pytest.mark.e2e

PASSWORDS = {"alice": "alice-Secret-1", "bob": "bob-Secret-2"}


def start(workdir: Path, mode: str, env: dict[str, str] | None = None, **auth: Any):
    users = write_users(workdir / "htpasswd", PASSWORDS)
    config = {"auth": {"mode": mode, "htpasswd": str(users), **auth}}
    return RegistryProcess(workdir, config, workers=2, env=env).start()


def sign_in(registry: RegistryProcess, mode: str, user: str, password: str, source: str) -> int:
    """Status of one sign-in from loopback address `source`, on a new connection (any worker)."""
    path = "/v2/" if mode == "basic" else "/auth/token"
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=30) as client:
        return client.get(f"{registry.url}{path}", auth=(user, password)).status_code


def test_workers_share_their_failure_counts(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    throttle = {"max_failures": 5, "base_delay": 60}
    with start(tmp_path / "registry", "basic", env={"TMPDIR": str(temp)}, throttle=throttle) as r:
        statuses = [sign_in(r, "basic", "bob", "guess", "127.0.0.1") for _ in range(10)]
        assert statuses == [401] * 5 + [429] * 5  # the 6th guess waits, whichever worker
        (state_dir,) = temp.glob("dockyard-throttle-*")  # made by `dockyard serve`
        assert (state_dir / "throttle.sqlite3").exists()
    assert list(temp.iterdir()) == []  # and removed at exit


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_failures_from_one_address_do_not_lock_the_owner_out_of_another(
    tmp_path: Path, mode: str
) -> None:
    throttle = {"max_failures": 3, "base_delay": 60}
    # No cache of verified passwords: each sign-in below is checked and throttled.
    with start(tmp_path / "registry", mode, throttle=throttle, cache_ttl=0) as registry:
        attacker = [sign_in(registry, mode, "alice", "guess", "127.0.0.1") for _ in range(4)]
        assert attacker == [401, 401, 401, 429]
        assert sign_in(registry, mode, "alice", PASSWORDS["alice"], "127.0.0.2") == 200
        assert sign_in(registry, mode, "alice", PASSWORDS["alice"], "127.0.0.1") == 429


def test_memory_stays_flat_while_large_tokens_are_presented(tmp_path: Path) -> None:
    workdir = tmp_path / "registry"
    with start(workdir, "token", anonymous_pull=["public/**"]) as registry:
        key = load_or_create_signing_key(workdir / "data" / "auth" / "token-signing-key.pem")
        signer = TokenSigner(key, "dockyard", "dockyard", 300, 600)
        pull = frozenset({"pull"})
        scopes = [Scope("repository", f"public/{n:04d}-{'x' * 40}", pull) for n in range(400)]
        url = f"{registry.url}/v2/{scopes[0].name}/tags/list"

        def present(count: int) -> None:
            for _ in range(count):  # each about 56 KB, a new one each time
                token = signer.access_token("", scopes).token
                response = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
                assert response.status_code == 404  # past the access check

        present(40)
        before = registry.rss_bytes()
        present(500)  # about 135 MB of verified tokens if all were remembered
        grown = registry.rss_bytes() - before
        # Two workers, each remembering at most 16 MiB of tokens, plus allocator slack.
        assert grown < 60 << 20, f"the workers grew by {grown >> 20} MiB"
