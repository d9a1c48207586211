"""Helpers for access-control tests: users files, credentials, upload shortcuts."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import httpx

from registry.auth import htpasswd


def write_users(path: Path, users: dict[str, str]) -> Path:
    """An htpasswd file with these users (cheap bcrypt rounds: tests only)."""
    htpasswd.write(path, {name: htpasswd.hash_password(pw, rounds=4) for name, pw in users.items()})
    return path


def remove_user(path: Path, name: str) -> None:
    users = htpasswd.read(path)
    del users[name]
    htpasswd.write(path, users)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def push_blob(
    client: httpx.AsyncClient, name: str, data: bytes, headers: dict[str, str]
) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    response = await client.post(
        f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=data, headers=headers
    )
    assert response.status_code == 201, response.text
    return digest
