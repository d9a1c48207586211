"""A worker loads the libraries of optional features only when they are configured:
PyJWT and cryptography (token mode), httpx (webhooks, pull-through cache), boto3 and
obstore (S3). Together they cost each idle worker some 13 MB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

OPTIONAL = ("jwt", "cryptography", "httpx", "boto3", "obstore")
NOWHERE = "http://127.0.0.1:9/"  # nothing is sent: the app only starts and stops

# Does what `dockyard serve` does before its workers start (with one worker, they run in
# that very process), builds the app as a worker does and starts it, then lists which of
# OPTIONAL the process has loaded.
_PROBE = """
import asyncio, json, sys
from registry.app import create_app
from registry.cli import _prepare_access
from registry.config import Config

async def main() -> None:
    config = Config(**json.loads(sys.argv[1]))
    assert _prepare_access(config) is None
    app = create_app(config)
    async with app.router.lifespan_context(app):
        pass

asyncio.run(main())
print(json.dumps([name for name in json.loads(sys.argv[2]) if name in sys.modules]))
"""


def _loaded(settings: dict[str, Any]) -> list[str]:
    answer = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(settings), json.dumps(OPTIONAL)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    return json.loads(answer.stdout.strip().splitlines()[-1])


def _filesystem(tmp_path: Path) -> dict[str, Any]:
    return {"storage": {"filesystem": {"root": str(tmp_path / "data")}}, "gc": {"enabled": False}}


def test_the_default_configuration_loads_none_of_them(tmp_path: Path) -> None:
    assert _loaded(_filesystem(tmp_path)) == []


@pytest.mark.parametrize(
    ("feature", "expected"),
    [
        ({"auth": {"mode": "token"}}, ["jwt", "cryptography"]),
        ({"notifications": {"endpoints": [{"name": "a", "url": NOWHERE}]}}, ["httpx"]),
        ({"proxy": {"upstreams": [{"prefix": "hub", "url": NOWHERE}]}}, ["httpx"]),
    ],
)
def test_a_configured_feature_loads_its_own(
    tmp_path: Path, feature: dict[str, Any], expected: list[str]
) -> None:
    settings = {**_filesystem(tmp_path), **feature}
    if "auth" in feature:  # a copy: the parameter is shared
        users = tmp_path / "htpasswd"
        users.write_text("")
        settings["auth"] = {**feature["auth"], "htpasswd": str(users)}
    assert _loaded(settings) == expected
