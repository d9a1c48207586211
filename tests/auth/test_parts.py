"""The parts of access control on their own: users file, scopes, rules, throttle, config."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.auth import htpasswd
from registry.auth.credentials import parse_basic
from registry.auth.rules import Rules
from registry.auth.scopes import Scope, ScopeError, merge, parse_scope, parse_scopes
from registry.auth.throttle import Throttle, network_of
from registry.config import AuthConfig, Config, ConfigError, ThrottleConfig, load_config


@pytest.mark.parametrize(
    "line",
    [
        "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
        "alice:$apr1$salt$Bb4b8nQ5tDZ2J3jM2mcgW/",
        "alice:rl0R3VXSaW1aE",
        "alice:plaintext",
        "alice:$5$rounds=5000$salt$hash",
    ],
)
def test_weak_hashes_are_refused_with_the_line(line: str) -> None:
    with pytest.raises(htpasswd.HtpasswdError, match=r"htpasswd:2: .*non-bcrypt"):
        htpasswd.parse("# comment\n" + line + "\n")


def test_bcrypt_variants_are_read() -> None:
    hashed = htpasswd.hash_password("pw", rounds=4)
    for prefix in ("$2a$", "$2b$", "$2y$"):
        line = f"u:{prefix}{hashed[4:]}"
        assert htpasswd.parse(line) == {"u": prefix + hashed[4:]}


def test_users_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "htpasswd"
    htpasswd.write(path, {"b": htpasswd.hash_password("x", 4), "a": htpasswd.hash_password("y", 4)})
    assert list(htpasswd.read(path)) == ["a", "b"]
    assert path.stat().st_mode & 0o777 == 0o600
    assert htpasswd.read(tmp_path / "missing") == {}


@pytest.mark.parametrize(
    "name", ["", "a:b", "-x", "a b", "x" * 65, "é", "ALICE", "Bob", "a@b", "a..b", "a-", "a/b"]
)
def test_bad_user_names(name: str) -> None:
    with pytest.raises(htpasswd.HtpasswdError):
        htpasswd.check_username(name)


def test_parse_basic() -> None:
    assert parse_basic("Basic YWxpY2U6cDpx") == ("alice", "p:q")
    assert parse_basic("basic YWxpY2U6") == ("alice", "")
    assert parse_basic("Basic Og==") == ("", "")
    for bad in ("Basic", "Basic ***", "Basic YWxpY2U=", "Bearer YWxpY2U6cA==", "Basic é"):
        assert parse_basic(bad) is None


def test_scope_grammar() -> None:
    assert parse_scope("repository:team/app:pull,push") == Scope(
        "repository", "team/app", frozenset({"pull", "push"})
    )
    assert parse_scope("repository:localhost:5000/app:pull").name == "localhost:5000/app"
    assert parse_scope("repository(plugin):x:pull").type == "repository"
    assert parse_scope("registry:catalog:*").actions == {"*"}
    assert parse_scope("repository:x:").actions == frozenset()
    for bad in ("repository", "repository:x", "Repo:x:pull", "repository::pull", "r:x:PULL"):
        with pytest.raises(ScopeError):
            parse_scope(bad)
    scopes = parse_scopes(["repository:a:pull repository:b:push", "repository:a:push"])
    assert [str(s) for s in merge(scopes)] == ["repository:a:pull,push", "repository:b:push"]


def rules(**settings) -> Rules:
    return Rules(AuthConfig(**settings))


def test_globs() -> None:
    r = rules(
        rules=[{"repositories": ["team/*", "lib/**", "exact"], "users": ["u"], "actions": ["pull"]}]
    )
    allowed = {
        name
        for name in ("team/a", "team/a/b", "lib/a/b/c", "lib", "exact", "exactly", "teamx/a")
        if r.actions("u", name)
    }
    assert allowed == {"team/a", "lib/a/b/c", "exact"}
    assert r.actions("other", "team/a") == frozenset()
    assert r.actions(None, "team/a") == frozenset()


def test_user_namespaces_match_the_name_exactly() -> None:
    r = rules(user_namespaces=True, rules=[])
    assert r.actions("alice", "alice/app") == {"pull", "push", "delete"}
    assert r.actions("ALICE", "alice/app") == frozenset()


def test_rules_combine_users_groups_admins_and_anonymous() -> None:
    r = rules(
        admins=["boss"],
        groups={"ops": ["olga"]},
        rules=[
            {"repositories": ["app/*"], "groups": ["ops"], "actions": ["push"]},
            {"repositories": ["app/**"], "users": ["*"], "actions": ["pull"]},
        ],
        anonymous_pull=["pub/*"],
        user_namespaces=True,
    )
    assert r.actions("olga", "app/x") == {"pull", "push"}
    assert r.actions("ivan", "app/x") == {"pull"}
    assert r.actions("boss", "anything/at/all") == {"pull", "push", "delete"}
    assert r.actions(None, "pub/x") == {"pull"}
    assert r.actions("ivan", "pub/x") == {"pull"}
    assert r.actions("ivan", "ivan/deep/repo") == {"pull", "push", "delete"}
    assert r.actions("ivan", "olga/repo") == frozenset()
    assert r.actions(None, "ivan/repo") == frozenset()
    assert r.grant("ivan", parse_scope("repository:app/x:pull,push,delete")).actions == {"pull"}
    assert r.grant("ivan", parse_scope("registry:catalog:*")).actions == {"*"}
    assert r.grant(None, parse_scope("registry:catalog:*")).actions == frozenset()
    assert r.grant("boss", parse_scope("other:thing:pull")).actions == frozenset()


def test_throttle_delays_double_and_success_resets() -> None:
    throttle = Throttle(ThrottleConfig(max_failures=2, base_delay=1, max_delay=5))
    now = 1000.0
    for _ in range(2):
        assert throttle.begin_now("u", "a", now) == 0  # counted until it succeeds
    assert throttle.begin_now("u", "a", now) == 1
    assert throttle.begin_now("v", "a", now) == 0  # another user at that address
    now += 1.5
    assert throttle.begin_now("u", "a", now) == 0
    assert throttle.begin_now("u", "a", now) == 2
    for _ in range(10):
        now += 10
        throttle.begin_now("u", "a", now)
    assert throttle.begin_now("u", "a", now) == 5  # capped
    assert throttle.begin_now("u", "b", now) == 0  # the same user elsewhere
    throttle.succeeded_now("u", "a", now)
    assert throttle.begin_now("u", "a", now) == 0


def test_throttle_counters_are_shared_through_the_state_dir(tmp_path: Path) -> None:
    config = ThrottleConfig(max_failures=2, base_delay=30, state_dir=tmp_path / "state")
    first, second = Throttle(config), Throttle(config)  # as two workers
    assert first.begin_now("u", "a") == 0
    assert second.begin_now("u", "a") == 0
    assert first.begin_now("u", "a") > 0
    second.cancel_now("u", "a")  # an attempt that never ran gives its failure back
    assert first.begin_now("u", "a") == 0


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("unknown", "unknown"),
    ],
)
def test_ipv6_clients_are_counted_by_their_network(address: str, network: str) -> None:
    assert network_of(address) == network


def test_auth_and_tls_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    for text, key in [
        ("auth: {mode: ldap}", "auth.mode"),
        ("auth: {rules: [{repositories: [x], actions: [write]}]}", "auth.rules.0.actions.0"),
        ("auth: {token: {expires_in: 5}}", "auth.token.expires_in"),
        ("auth: {throtle: {}}", "auth.throtle"),
        ("tls: {certificate: c.pem}", "tls"),
        ("tls: {client_ca: ca.pem}", "tls"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(path)
    assert Config().auth.mode == "none" and not Config().tls.enabled
