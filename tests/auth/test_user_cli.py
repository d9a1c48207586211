"""`dockyard user add|remove|list` on the htpasswd file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bcrypt

from tests.support.server import ROOT


def dockyard(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "registry", "user", *args],
        cwd=ROOT, input=input, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_add_list_remove(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    assert dockyard("--htpasswd", str(path), "add", "alice", input="s3cret\n").returncode == 0
    assert dockyard("--htpasswd", str(path), "add", "bob", input="other\n").returncode == 0
    name, hashed = path.read_text().splitlines()[0].split(":", 1)
    assert name == "alice" and hashed.startswith("$2b$")
    assert bcrypt.checkpw(b"s3cret", hashed.encode())
    assert "s3cret" not in path.read_text()
    assert dockyard("--htpasswd", str(path), "list").stdout.split() == ["alice", "bob"]
    assert dockyard("--htpasswd", str(path), "remove", "alice").returncode == 0
    assert dockyard("--htpasswd", str(path), "list").stdout.split() == ["bob"]
    result = dockyard("--htpasswd", str(path), "remove", "alice")
    assert result.returncode == 1 and "no user alice" in result.stderr


def test_users_file_from_config(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"auth: {{htpasswd: {tmp_path / 'users'}}}\n")
    assert dockyard("--config", str(config), "add", "carol", input="pw\n").returncode == 0
    assert (tmp_path / "users").read_text().startswith("carol:$2b$")


def test_refuses_weak_hashes_and_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("old:$apr1$abc$def\n")
    result = dockyard("--htpasswd", str(path), "list")
    assert (
        result.returncode == 1 and "non-bcrypt" in result.stderr and "htpasswd:1" in result.stderr
    )
    empty = tmp_path / "other"
    result = dockyard("--htpasswd", str(empty), "add", "dave", input="\n")
    assert result.returncode == 1 and "empty" in result.stderr
    result = dockyard("--htpasswd", str(empty), "add", "dave", input="x" * 73 + "\n")
    assert result.returncode == 1 and "72 bytes" in result.stderr
    result = dockyard("--htpasswd", str(empty), "add", "bad:name", input="pw\n")
    assert result.returncode == 1 and "invalid user name" in result.stderr
    assert not empty.exists()


def test_names_that_cannot_own_their_namespace_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    assert dockyard("--htpasswd", str(path), "add", "alice", input="pw\n").returncode == 0
    for name in ("ALICE", "Alice", "alice@corp"):
        result = dockyard("--htpasswd", str(path), "add", name, input="pw\n")
        assert result.returncode == 1, name
        assert "invalid user name" in result.stderr and "namespace" in result.stderr
    assert list(bcrypt_users(path)) == ["alice"]


def bcrypt_users(path: Path) -> list[str]:
    return [line.split(":")[0] for line in path.read_text().splitlines()]


def test_serve_refuses_a_weak_users_file(tmp_path: Path) -> None:
    users = tmp_path / "htpasswd"
    users.write_text("old:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"auth: {{mode: basic, htpasswd: {users}}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "registry", "serve", "--config", str(config), "--port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "non-bcrypt" in result.stderr and f"{users}:1" in result.stderr


def test_options_after_the_action(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"auth: {{htpasswd: {tmp_path / 'users'}}}\n")
    added = dockyard("add", "bob", "--config", str(config), input="pw\n")
    assert added.returncode == 0, added.stderr
    assert dockyard("list", "--htpasswd", str(tmp_path / "users")).stdout.split() == ["bob"]
    # An option before the action is not undone by the action's own (absent) option.
    assert dockyard("--htpasswd", str(tmp_path / "users"), "list").stdout.split() == ["bob"]


def test_list_and_remove_say_there_is_no_users_file(tmp_path: Path) -> None:
    missing = tmp_path / "htpasswd"
    for action in (["list"], ["remove", "alice"]):
        result = dockyard("--htpasswd", str(missing), *action)
        assert result.returncode == 1
        assert f"no users file {missing}" in result.stderr
        assert "dockyard user add" in result.stderr
    assert not missing.exists()
