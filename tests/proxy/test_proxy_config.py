"""`proxy.upstreams`: what the configuration accepts and what it refuses, naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from registry.config import Config, ConfigError, load_config

HUB = {"prefix": "dockerhub", "url": "https://registry-1.docker.io"}


def test_an_upstream_takes_its_defaults() -> None:
    upstream = Config(proxy={"upstreams": [HUB]}).proxy.upstreams[0]
    assert (upstream.tag_ttl, upstream.timeout, upstream.default) == (600.0, 30.0, False)
    assert upstream.repositories == []


@pytest.mark.parametrize(
    ("upstreams", "problem"),
    [
        ([{**HUB, "prefix": "Docker"}], "not a valid repository name"),
        ([{**HUB, "url": "registry-1.docker.io"}], "should match pattern"),
        ([{**HUB, "url": "https://ghcr.io/v2/org"}], "should match pattern"),
        ([HUB, {**HUB, "url": "https://ghcr.io"}], "prefix 'dockerhub' overlaps another"),
        ([HUB, {"prefix": "dockerhub/ghcr", "url": "https://ghcr.io"}], "overlaps another"),
        ([{**HUB, "default": True}, {"prefix": "b", "url": "http://b", "default": True}],
         "at most one upstream may be the default"),
        ([{**HUB, "username": "me"}], "username and password must be given together"),
        ([{**HUB, "username": "me", "password": "pw", "credentials_file": "c.json"}],
         "not both"),
        ([{**HUB, "tag_ttl": "ten minutes"}], "is not a duration"),
    ],
)  # fmt: skip
def test_invalid_upstreams_are_refused(
    upstreams: list[dict[str, Any]], problem: str, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"proxy": {"upstreams": upstreams}}))
    with pytest.raises(ConfigError, match=problem) as raised:
        load_config(path)
    assert "proxy" in str(raised.value)
