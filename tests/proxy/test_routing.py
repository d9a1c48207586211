"""Which pulls may go upstream at all: the check a local repository's every pull makes."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.routing import Routes
from proxy.upstream import Upstream
from registry.config import UpstreamConfig


def routes(*upstreams: dict[str, Any]) -> Routes:
    return Routes([Upstream(UpstreamConfig(**settings), None) for settings in upstreams])


HUB = {"prefix": "hub", "url": "http://127.0.0.1:9"}


@pytest.mark.parametrize(
    ("upstreams", "name", "fallback", "may"),
    [
        ((HUB,), "hub/library/alpine", True, True),
        ((HUB,), "hub/library/alpine", False, True),
        ((HUB,), "team/app", True, False),  # no upstream takes names under no prefix
        ((HUB,), "hubble/app", True, False),  # a prefix is a whole path segment
        (({**HUB, "default": True},), "team/app", True, True),
        (({**HUB, "default": True},), "team/app", False, False),
        (({**HUB, "registry": "docker.io"},), "team/app", True, True),  # ?ns= may pick it
        ((), "team/app", True, False),
    ],
)
def test_may_go_upstream_is_false_only_where_target_is_surely_none(
    upstreams: tuple[dict[str, Any], ...], name: str, fallback: bool, may: bool
) -> None:
    assert routes(*upstreams).may_go_upstream(name, fallback) is may


def test_owner_is_the_upstream_whose_prefix_holds_the_name() -> None:
    table = routes(HUB, {"prefix": "ghcr", "url": "http://127.0.0.1:9"})
    assert table.owner("ghcr/org/tool").prefix == "ghcr"  # type: ignore[union-attr]
    assert table.owner("hub/library/alpine").prefix == "hub"  # type: ignore[union-attr]
    assert table.owner("hubble/app") is None
