"""The pull-through cache of upstream registries (`proxy.upstreams`, README
"Pull-through cache"): `routing` says which names go where, `upstream` talks to an
upstream registry (`credentials` finds what it presents), `cache` keeps what it
fetched in the store (`blob_fill` streams one blob in, `single_flight` shares one
fetch between concurrent requests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry.config import Config
from storage.store import Store

if TYPE_CHECKING:
    import httpx

    from proxy.cache import PullThrough


def build_proxy(
    config: Config, store: Store, transport: httpx.AsyncBaseTransport | None = None
) -> PullThrough | None:
    """The cache of the configured upstreams, or None when there are none.
    `transport`: how to reach them (tests give an in-process one)."""
    if not config.proxy.upstreams:
        return None
    # Imported only here: a server with no upstream never loads httpx and the cache's
    # modules (some 3 MB and 30 ms a worker).
    from proxy.cache import PullThrough
    from proxy.credentials import upstream_credentials
    from proxy.upstream import Upstream

    upstreams = [
        Upstream(upstream, upstream_credentials(upstream), transport)
        for upstream in config.proxy.upstreams
    ]
    return PullThrough(upstreams, store, config.uploads.manifest_max_bytes)
