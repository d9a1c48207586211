"""The real docker client against a registry with users and rules, in basic and token mode."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.auth import write_users
from tests.support.dockerd import DockerDaemon
from tests.support.required import require_tool
from tests.support.server import RegistryProcess

pytestmark = pytest.mark.e2e

PASSWORDS = {"alice": "alice-Secret-1", "bob": "bob-Secret-2"}
AUTH: dict[str, Any] = {
    "rules": [
        {"repositories": ["team/**", "public/**"], "users": ["alice"], "actions": ["pull", "push"]},
        {"repositories": ["team/*"], "users": ["bob"], "actions": ["pull"]},
    ],
    "anonymous_pull": ["public/**"],
}


@pytest.fixture(scope="module")
def image(dockerd: DockerDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tag = "dockyard-access-test:1"
    dockerd.build_image(tag, tmp_path_factory.mktemp("context"))
    yield tag
    # Leave the shared daemon without our layers: other tests count the layers they pull.
    dockerd.run("rmi", tag, check=False)


def start_registry(workdir: Path, mode: str, **auth: Any) -> RegistryProcess:
    users = write_users(workdir / "htpasswd", PASSWORDS)
    config = {"auth": {**AUTH, "mode": mode, "htpasswd": str(users), **auth}}
    return RegistryProcess(workdir, config).start()


@pytest.fixture(params=["basic", "token"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryProcess]:
    server = start_registry(tmp_path / "registry", request.param)
    server.mode = request.param  # type: ignore[attr-defined]
    yield server
    server.stop()


def login(dockerd: DockerDaemon, host: str, user: str, password: str, check: bool = True):
    return dockerd.run(
        "login", "--username", user, "--password-stdin", host,
        input=f"{password}\n".encode(), check=check,
    )  # fmt: skip


def skopeo_inspect(host: str, reference: str) -> subprocess.CompletedProcess[str]:
    """Anonymous `skopeo inspect` (a client that sends no credentials when it has none)."""
    command = [require_tool("skopeo"), "inspect", "--tls-verify=false", "--no-creds"]
    return subprocess.run(
        [*command, f"docker://{host}/{reference}"], capture_output=True, text=True, timeout=120
    )


def assert_no_secrets_logged(registry: RegistryProcess) -> None:
    log = registry.log()
    assert "GET /v2/" in log  # the access log is on: there was something to leak into
    for secret in (*PASSWORDS.values(), "Authorization", "Bearer ", "Basic ", "eyJ"):
        assert secret not in log, f"{secret!r} reached the server log"


def test_docker_login_push_pull_logout(dockerd: DockerDaemon, image: str, registry) -> None:
    host = registry.host
    app, tool = f"{host}/team/app:1", f"{host}/public/tool:1"
    for tag in (app, tool):
        dockerd.run("tag", image, tag)
    try:
        assert "Login Succeeded" in login(dockerd, host, "alice", PASSWORDS["alice"]).stdout
        dockerd.run("push", app)
        dockerd.run("push", tool)
        dockerd.run("rmi", app)
        dockerd.run("pull", app)

        # bob may pull team/* but not push there.
        login(dockerd, host, "bob", PASSWORDS["bob"])
        dockerd.run("pull", app)
        dockerd.run("tag", image, f"{host}/team/app:bob")
        denied = dockerd.run("push", f"{host}/team/app:bob", check=False)
        assert denied.returncode != 0
        assert "denied" in denied.stderr.lower(), denied.stderr

        # Signed out: team/* may not be pulled.
        dockerd.run("logout", host)
        dockerd.run("rmi", app, tool)
        refused = dockerd.run("pull", app, check=False)
        assert refused.returncode != 0
        assert "unauthorized" in refused.stderr.lower() or "no basic auth" in refused.stderr
        # public/** may: docker manages it in token mode only (it refuses to answer a basic
        # challenge without credentials); other clients in both modes.
        if registry.mode == "token":
            dockerd.run("pull", tool)
        assert skopeo_inspect(host, "public/tool:1").returncode == 0
        refused = skopeo_inspect(host, "team/app:1")
        assert refused.returncode != 0 and "unauthorized" in refused.stderr.lower()
    finally:
        dockerd.run("logout", host, check=False)
        dockerd.run("rmi", app, tool, f"{host}/team/app:bob", check=False)
    assert_no_secrets_logged(registry)
    if registry.mode == "token":  # Dockyard's own info lines reach the log (the audit trail)
        assert "token for alice (client 'docker')" in registry.log()


def test_docker_login_with_a_wrong_password_fails_clearly(dockerd: DockerDaemon, registry) -> None:
    result = login(dockerd, registry.host, "alice", "not-the-password", check=False)
    assert result.returncode != 0
    assert "unauthorized" in result.stderr.lower() or "401" in result.stderr, result.stderr
    assert "Login Succeeded" not in result.stdout


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_repeated_failures_are_throttled(dockerd: DockerDaemon, tmp_path: Path, mode: str) -> None:
    throttle = {"max_failures": 3, "base_delay": 60}
    with start_registry(tmp_path / "registry", mode, throttle=throttle) as registry:
        for _ in range(3):
            assert login(dockerd, registry.host, "bob", "guess", check=False).returncode != 0
        # Now even the right password must wait.
        result = login(dockerd, registry.host, "bob", PASSWORDS["bob"], check=False)
        assert result.returncode != 0
        assert "429" in result.stderr or "too many" in result.stderr.lower(), result.stderr


def test_workers_share_one_signing_key(tmp_path: Path) -> None:
    """Tokens from any worker are good at every other one, and one key is ever made."""
    workdir = tmp_path / "registry"
    users = write_users(workdir / "htpasswd", PASSWORDS)
    config = {"auth": {**AUTH, "mode": "token", "htpasswd": str(users)}}
    with RegistryProcess(workdir, config, workers=2) as registry:
        statuses = set()
        for _ in range(20):  # a new connection each time: any worker may answer
            token = httpx.get(
                f"{registry.url}/auth/token",
                params={"service": "dockyard", "scope": "repository:team/app:pull"},
                auth=("alice", PASSWORDS["alice"]),
            ).json()["token"]
            response = httpx.get(
                f"{registry.url}/v2/team/app/tags/list",
                headers={"Authorization": f"Bearer {token}"},
            )
            statuses.add(response.status_code)
        assert statuses == {404}  # past the access check every time
        keys = list((workdir / "data" / "auth").iterdir())
        assert [key.name for key in keys] == ["token-signing-key.pem"]
