"""What a feature costs the application alone: its ASGI app called in this process, no
server or client around it, on memory storage (no threads: the CPU time is the
request's alone), the feature off and on in alternating rounds. Precise to about a
microsecond where rates through a server on a shared machine move by ten percent.

`python -m bench.app_cost` prints the costs of metrics, of an events endpoint that takes
no pulls, of a configured pull-through cache on local pulls, and of a pull of what the
cache holds beside a local pull.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import httpx
import uvloop

from bench.client import MANIFEST_ACCEPT, OCI_MANIFEST, image_manifest
from proxy import build_proxy
from registry.app import create_app
from registry.config import Config
from storage.memory import MemoryDriver

REQUESTS = 2000  # per figure, app and round
REPOSITORY = "bench/small"

Call = Callable[[], Awaitable[None]]


def _request(app: Any, method: str, path: str) -> Call:
    """One request through the app as uvicorn would make it; raises unless answered 200."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 5000),
        "headers": [(b"host", b"127.0.0.1:5000"), (b"accept", MANIFEST_ACCEPT.encode())],
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"{method} {path}: {message['status']}")

    async def call() -> None:
        await app(dict(scope), receive, send)

    return call


async def _push_small_image(app: Any) -> str:
    """The bench's small image (a config and a 2 KiB layer); the layer's digest."""
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}'
    layer = os.urandom(2048)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
        for blob in (config, layer):
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            answer = await client.post(
                f"/v2/{REPOSITORY}/blobs/uploads/?digest={digest}", content=blob
            )
            answer.raise_for_status()
        answer = await client.put(
            f"/v2/{REPOSITORY}/manifests/latest",
            content=image_manifest(config, layer),
            headers={"Content-Type": OCI_MANIFEST},
        )
        answer.raise_for_status()
    return "sha256:" + hashlib.sha256(layer).hexdigest()


async def _alternate(
    rounds: int, calls: dict[str, dict[str, Call]]
) -> dict[str, dict[str, list[float]]]:
    """CPU µs a request of each call, per round, the labels taking turns at going first
    (the first round warms up)."""
    cpu: dict[str, dict[str, list[float]]] = {
        label: {figure: [] for figure in figures} for label, figures in calls.items()
    }
    labels = list(calls)
    for round_ in range(rounds + 1):
        for label in labels if round_ % 2 == 0 else reversed(labels):
            for figure, call in calls[label].items():
                started = time.process_time()
                for _ in range(REQUESTS):
                    await call()
                if round_:
                    used = time.process_time() - started
                    cpu[label][figure].append(used / REQUESTS * 1e6)
    return cpu


async def _measure(
    rounds: int, off: dict[str, Any], on: dict[str, Any]
) -> dict[str, dict[str, list[float]]]:
    calls: dict[str, dict[str, Call]] = {}
    async with contextlib.AsyncExitStack() as stack:
        for label, settings in (("off", off), ("on", on)):
            # no collector run in the middle of a round
            config = Config(**{"gc": {"enabled": False}, **settings})
            app = create_app(config, MemoryDriver())
            await stack.enter_async_context(app.router.lifespan_context(app))
            layer = await _push_small_image(app)
            calls[label] = {
                "manifest_rps": _request(app, "GET", f"/v2/{REPOSITORY}/manifests/latest"),
                "head_rps": _request(app, "HEAD", f"/v2/{REPOSITORY}/blobs/{layer}"),
            }
        return await _alternate(rounds, calls)


def _medians(
    measuring: Coroutine[Any, Any, dict[str, dict[str, list[float]]]],
) -> dict[str, tuple[float, float]]:
    """Per figure, the median CPU µs of the "off" calls and of the "on" calls. The access
    log (on, as by default) writes to /dev/null, as a server's to a file."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        cpu = uvloop.run(measuring)
    return {
        figure: (statistics.median(cpu["off"][figure]), statistics.median(cpu["on"][figure]))
        for figure in cpu["off"]
    }


def measure(rounds: int, off: dict[str, Any], on: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Per figure: the median CPU µs a request costs the app configured with the settings
    `off`, and `on` (configuration sections over the defaults)."""
    return _medians(_measure(rounds, off, on))


# An endpoint that wants no pull: a pull's event is never built. It takes deletes, not
# pushes as in the served comparison, so that the image pushed before the rounds leaves
# it no event to retry against a loopback port where nothing listens.
NO_PULLS = {"name": "no-pulls", "url": "http://127.0.0.1:9/", "actions": ["delete"]}
# bench/costs.py's comparisons measured here: a title, the settings without and with
FEATURES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "metrics": ("metrics", {"metrics": {"enabled": False}}, {}),
    "pushes": (
        "events: one endpoint that takes no pulls (`actions: [delete]`)",
        {},
        {"notifications": {"endpoints": [NO_PULLS]}},
    ),
}


def measure_features(rounds: int) -> dict[str, dict[str, tuple[float, float]]]:
    """What metrics and an endpoint that wants no pulls cost a request (by comparison)."""
    return {key: measure(rounds, off, on) for key, (_, off, on) in FEATURES.items()}


def _upstream(default: bool) -> dict[str, Any]:
    """An upstream that local pulls must not reach (nothing listens on port 9)."""
    return {"prefix": "hub", "url": "http://127.0.0.1:9", "default": default}


PROXY_SETTINGS = {  # each against no upstream at all
    "one upstream under a prefix": {"proxy": {"upstreams": [_upstream(False)]}},
    "the same, `default: true`": {"proxy": {"upstreams": [_upstream(True)]}},
}


def measure_proxy(rounds: int) -> dict[str, dict[str, tuple[float, float]]]:
    """What a configured pull-through cache costs a local repository's pulls."""
    return {label: measure(rounds, {}, on) for label, on in PROXY_SETTINGS.items()}


UPSTREAM_URL = "http://upstream.bench"  # an app in this process


async def _fill_cache(app: Any, name: str) -> None:
    """Pull the image tagged `latest` of `name` (its manifest and blobs) through the app."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
        answer = await client.get(
            f"/v2/{name}/manifests/latest", headers={"Accept": MANIFEST_ACCEPT}
        )
        answer.raise_for_status()
        manifest = answer.json()
        for blob in (manifest["config"], *manifest["layers"]):
            (await client.get(f"/v2/{name}/blobs/{blob['digest']}")).raise_for_status()


async def _measure_cache_hits(rounds: int) -> dict[str, dict[str, list[float]]]:
    """A local repository's pulls ("off") against the same pulls of an image the cache
    holds ("on": its tag confirmed upstream within `tag_ttl`), in one app."""
    upstream = create_app(Config(gc={"enabled": False}), MemoryDriver())
    proxied = {"upstreams": [{"prefix": "hub", "url": UPSTREAM_URL}]}
    config = Config(gc={"enabled": False}, proxy=proxied)
    app = create_app(config, MemoryDriver())
    async with contextlib.AsyncExitStack() as stack:
        for each in (upstream, app):
            await stack.enter_async_context(each.router.lifespan_context(each))
        cache = build_proxy(config, app.state.store, httpx.ASGITransport(app=upstream))
        assert cache is not None
        app.state.proxy = cache
        stack.push_async_callback(cache.close)
        layers = {"off": await _push_small_image(app), "on": await _push_small_image(upstream)}
        names = {"off": REPOSITORY, "on": f"hub/{REPOSITORY}"}
        await _fill_cache(app, names["on"])
        await cache.stored()
        calls = {
            label: {
                "manifest_rps": _request(app, "GET", f"/v2/{names[label]}/manifests/latest"),
                "head_rps": _request(app, "HEAD", f"/v2/{names[label]}/blobs/{layers[label]}"),
            }
            for label in ("off", "on")
        }
        return await _alternate(rounds, calls)


def measure_cache_hits(rounds: int) -> dict[str, dict[str, tuple[float, float]]]:
    """What a pull of what the cache holds costs beside the same pull of a local image."""
    return {"a warm pull through the cache": _medians(_measure_cache_hits(rounds))}


def main() -> None:
    rounds = 8
    print(f"CPU µs a request, medians of {rounds} alternating rounds of {REQUESTS:,} requests")
    results = {**measure_features(rounds), **measure_proxy(rounds), **measure_cache_hits(rounds)}
    for label, figures in results.items():
        for figure, (off, on) in figures.items():
            print(f"{label:32} {figure:14} off {off:6.1f} on {on:6.1f} cost {on - off:+5.1f}")


if __name__ == "__main__":
    main()
