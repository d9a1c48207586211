"""The pull-through cache of upstream registries (`proxy.upstreams`, README
"Pull-through cache"): `routing` says which names go where, `upstream` talks to an
upstream registry (`credentials` finds what it presents), `cache` keeps what it
fetched in the store (`blob_fill` streams one blob in, `single_flight` shares one
fetch between concurrent requests).
"""

from __future__ import annotations

import httpx

from proxy.cache import PullThrough
from proxy.credentials import upstream_credentials
from proxy.upstream import Upstream
from registry.config import Config
from storage.store import Store


def build_proxy(
    config: Config, store: Store, transport: httpx.AsyncBaseTransport | None = None
) -> PullThrough | None:
    """The cache of the configured upstreams, or None when there are none.
    `transport`: how to reach them (tests give an in-process one)."""
    if not config.proxy.upstreams:
        return None
    upstreams = [
        Upstream(upstream, upstream_credentials(upstream), transport)
        for upstream in config.proxy.upstreams
    ]
    return PullThrough(upstreams, store, config.uploads.manifest_max_bytes)
