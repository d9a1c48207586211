"""What access control refuses at start: a configured key that is missing, no users file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from registry.auth.htpasswd import HtpasswdError
from registry.auth.keys import KeyConfigError
from registry.auth.setup import build_access, signing_key_path
from registry.config import Config
from tests.support.auth import write_users
from tests.support.server import ROOT


def token_config(tmp_path: Path, **token: str) -> Config:
    users = write_users(tmp_path / "htpasswd", {"alice": "pw"})
    storage = {"filesystem": {"root": str(tmp_path / "data")}}
    return Config(auth={"mode": "token", "htpasswd": str(users), "token": token}, storage=storage)


def test_a_configured_signing_key_that_is_missing_is_not_generated(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "key.pem"
    with pytest.raises(KeyConfigError) as raised:
        build_access(token_config(tmp_path, signing_key=str(missing)))
    assert "auth.token.signing_key" in str(raised.value) and str(missing) in str(raised.value)
    assert not missing.exists() and not missing.parent.exists()


def test_the_default_signing_key_is_generated_in_the_data_directory(tmp_path: Path) -> None:
    config = token_config(tmp_path)
    build_access(config)
    assert signing_key_path(config) == tmp_path / "data" / "auth" / "token-signing-key.pem"
    assert signing_key_path(config).exists()


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_auth_without_a_users_file_is_refused(tmp_path: Path, mode: str) -> None:
    missing = tmp_path / "htpasswd"
    storage = {"filesystem": {"root": str(tmp_path / "data")}}
    config = Config(auth={"mode": mode, "htpasswd": str(missing)}, storage=storage)
    with pytest.raises(HtpasswdError) as raised:
        build_access(config)
    assert str(missing) in str(raised.value) and "dockyard user add" in str(raised.value)


def test_serve_refuses_to_start_without_a_users_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"auth: {{mode: basic, htpasswd: {tmp_path / 'users'}}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "registry", "serve", "--config", str(config), "--port", "0",
         "--workers", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"users file {tmp_path / 'users'}" in result.stderr
    assert "dockyard user add" in result.stderr
