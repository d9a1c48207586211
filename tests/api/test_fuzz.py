"""Fuzz every endpoint: never a 5xx, every 4xx the spec's JSON error body, HEAD bodiless.

A seeded generator builds requests against every route of `registry.app.ROUTES` (and the
token endpoint): methods, names (valid, invalid, traversal-like), digests, tags, query
parameters, headers (Range, Content-Range, Content-Length, Content-Type,
Transfer-Encoding) and bodies (random bytes, valid and mutated manifests). A registry
holding an image, a referrer and open upload sessions gives it something to hit.
`FUZZ_SEED` replays a run, `FUZZ_REQUESTS` runs more; a failure prints the seed and the
failing requests.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from oci.errors import ErrorCode
from registry.app import ROUTES, create_app
from registry.auth.guards import TOKEN_PATH
from registry.config import Config
from storage.driver import StorageDriver
from tests.api.helpers import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    push_blob,
    push_image,
    put_manifest,
)
from tests.support.auth import basic, write_users

SEED = int(os.environ.get("FUZZ_SEED", "20261130"))
REQUESTS = int(os.environ.get("FUZZ_REQUESTS", "1500"))  # per driver; the token endpoint: 1/4

# Values json.dumps cannot write (it would recurse or refuse), spliced into the text.
LONG_INTEGER, DEEP = "<long integer>", "<deep nesting>"
SPLICED = {LONG_INTEGER: "9" * 5000, DEEP: "[" * 5000 + "]" * 5000}

ERROR_CODES = {code.name for code in ErrorCode}
UNSENDABLE_HEADER_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
METHODS = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "TRACE", "FOO"]
MEDIA_TYPES = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST]
QUERY_KEYS = ["n", "last", "digest", "mount", "from", "tag", "artifactType", "digest-algorithm"]
NAME = "fuzz/app"


@dataclass
class Known:
    """What the registry holds, for the generator to aim at."""

    names: list[str]
    tags: list[str]
    blobs: list[str]
    manifests: list[str]
    uploads: list[str]
    documents: list[dict[str, Any]]


@dataclass
class FuzzRequest:
    method: str
    path: str
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    route: str = ""  # the route template it aims at

    def describe(self) -> str:
        body = self.body[:300] + (b"..." if len(self.body) > 300 else b"")
        return (
            f"{self.method} {self.path} params={self.params} headers={self.headers}"
            f" body({len(self.body)})={body!r}"
        )


class Generator:
    def __init__(self, rng: random.Random, known: Known) -> None:
        self.rng = rng
        self.known = known

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def junk(self, limit: int = 40) -> str:
        alphabet = string.ascii_letters + string.digits + "-._~:@!$&'()*+,;=%/ é"
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(0, limit)))

    def number(self) -> str:
        choices = ["0", "1", "-1", "10", "007", "1e3", " 5", "+3", "²", "9" * 19, "9" * 40, ""]
        choices.append("9" * 5000)  # beyond Python's int() limit of 4300 digits
        small = str(self.rng.randint(0, 40))  # within the seeded blobs, often
        return self.rng.choice([*choices, small, small, small, str(self.rng.randint(0, 1 << 70))])

    def pick(self, known: list[str], odd: list[str]) -> str:
        """A known value half the time (to get past the first checks), else an odd one."""
        return self.rng.choice(known if known and self.chance(0.5) else odd)

    def name(self) -> str:
        odd = ["fuzz/other", "a", "UPPER/case", "a//b", "a/../b", "..", "../../etc", "%2e%2e/x"]
        odd += ["a%2Fb", "-a", "a_", "x" * 300, "/".join(["a"] * 60), "_catalog", "é"]
        odd += ["a%00b", "a%ffb", "a%ED%A0%80b", "a%0Ab", "a%0Db", "a\\b", 'a"b']
        return self.pick(self.known.names, [*odd, self.junk()])

    def digest(self) -> str:
        hexdigits = "".join(self.rng.choice("0123456789abcdef") for _ in range(64))
        odd = [f"sha256:{hexdigits}", f"sha512:{hexdigits * 2}", f"sha256:{hexdigits.upper()}"]
        odd += [f"sha256:{hexdigits[:10]}", f"md5:{hexdigits[:32]}", f"sha256+b64:{hexdigits}"]
        odd += ["sha256:", ":", self.junk()]
        return self.pick([*self.known.blobs, *self.known.manifests], odd)

    def tag(self) -> str:
        odd = ["v2", "latest", "-bad", ".bad", "a" * 129, "a" * 128, "a%00", "a%ff", self.junk()]
        return self.pick(self.known.tags, odd)

    def reference(self) -> str:
        return self.digest() if self.chance(0.4) else self.tag()

    def upload_id(self) -> str:
        return self.pick(self.known.uploads, ["0" * 32, "../x", self.junk()])

    def path(self, route: Route) -> str:
        path = route.path
        for param, make in [
            ("{name:path}", self.name),
            ("{digest}", self.digest),
            ("{reference}", self.reference),
            ("{upload_id}", self.upload_id),
        ]:
            if param in path:
                path = path.replace(param, make())
        return path

    def query_value(self, key: str) -> str:
        if key in ("n",):
            return self.number()
        if key in ("digest", "mount"):
            return self.digest()
        if key in ("from", "last"):
            return self.name() if key == "from" else self.tag()
        if key == "tag":
            return self.tag()
        if key == "digest-algorithm":
            return self.rng.choice(["sha256", "sha512", "md5", "", self.junk()])
        return self.rng.choice([*MEDIA_TYPES, "application/spdx+json", self.junk()])

    def query(self) -> list[tuple[str, str]]:
        return [(key, self.query_value(key)) for key in QUERY_KEYS if self.chance(0.15)]

    def range_header(self) -> str:
        a, b = self.number(), self.number()
        return self.rng.choice(
            [f"bytes={a}-{b}", f"bytes={a}-", f"bytes=-{b}", "bytes=0-1,3-4", "bytes=", self.junk()]
        )

    def content_range(self) -> str:
        a, b = self.number(), self.number()
        return self.rng.choice([f"{a}-{b}", f"{a}-", f"bytes {a}-{b}/*", "0-0", self.junk()])

    def headers(self, body: bytes) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.chance(0.2):
            headers["Range"] = self.range_header()
        if self.chance(0.2):
            headers["Content-Range"] = self.content_range()
        if self.chance(0.1):
            headers["Content-Length"] = self.rng.choice([str(len(body)), self.number()])
        if self.chance(0.5):
            headers["Content-Type"] = self.rng.choice(
                [*MEDIA_TYPES, "application/json", "application/octet-stream", self.junk()]
            )
        if self.chance(0.05):
            headers["Transfer-Encoding"] = self.rng.choice(["chunked", "gzip", self.junk()])
        if self.chance(0.1):
            headers["Accept"] = ", ".join(self.rng.sample(MEDIA_TYPES, 2))
        return headers

    def body(self) -> bytes:
        kind = self.rng.random()
        if kind < 0.35:
            return b""
        if kind < 0.55:
            return self.rng.randbytes(self.rng.randint(1, 3000))
        if kind < 0.65:
            return json.dumps(self.rng.choice(self.known.documents)).encode()
        if kind < 0.9:
            return self.mutated_document()
        return self.mutated_bytes()

    def mutated_bytes(self) -> bytes:
        data = bytearray(json.dumps(self.rng.choice(self.known.documents)).encode())
        for _ in range(self.rng.randint(1, 5)):
            position = self.rng.randrange(len(data))
            data[position] = self.rng.randrange(256)
        return bytes(data[: self.rng.randint(0, len(data))] if self.chance(0.3) else data)

    def odd_value(self) -> Any:
        values: list[Any] = [None, True, 0, -1, 1.5, "", "x" * 2000, [], {}, self.digest()]
        values += [self.junk(), [self.junk()], {"k": self.junk()}, -(2**31)]
        values += [2**63, 2**64, 10**30, -(2**70), LONG_INTEGER]
        values += [float("nan"), float("inf"), DEEP, "\ud800"]
        return self.rng.choice(values)

    def mutated_document(self) -> bytes:
        document = copy.deepcopy(self.rng.choice(self.known.documents))
        for _ in range(self.rng.randint(1, 3)):
            self.mutate(document)
        return self.encode(document)

    def encode(self, document: Any) -> bytes:
        if self.chance(0.05):
            document["schemaVersion"] = 2.0
        text = json.dumps(document)  # NaN and lone surrogates (escaped) pass as they are
        for placeholder, raw in SPLICED.items():
            text = text.replace(json.dumps(placeholder), raw)
        return text.encode()

    def mutate(self, node: Any) -> None:
        """Change one value somewhere below `node`: replace, delete or add a key."""
        while True:
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                return
            key = self.rng.choice(keys)
            child = node[key]
            if isinstance(child, (dict, list)) and child and self.chance(0.6):
                node = child
                continue
            action = self.rng.random()
            if action < 0.6:
                node[key] = self.odd_value()
            elif action < 0.8 and isinstance(node, dict):
                del node[key]
            elif isinstance(node, dict):
                node[self.rng.choice(["annotations", "subject", "artifactType", self.junk(8)])] = (
                    self.odd_value()
                )
            else:
                node.append(self.odd_value())
            return

    def manifest_push(self) -> FuzzRequest:
        """A plausible push: a known repository, a tag, the document's own media type."""
        document = copy.deepcopy(self.rng.choice(self.known.documents))
        for _ in range(self.rng.randint(0, 2)):
            self.mutate(document)
        media_type = document.get("mediaType") if isinstance(document, dict) else None
        headers = {"Content-Type": media_type if isinstance(media_type, str) else OCI_MANIFEST}
        body = self.encode(document)
        path = f"/v2/{self.rng.choice(self.known.names)}/manifests/{self.tag()}"
        return FuzzRequest("PUT", path, self.query() if self.chance(0.3) else [], headers, body)

    def blob_fetch(self) -> FuzzRequest:
        """A plausible download: a known blob, often a range of it."""
        name, digest = self.rng.choice(self.known.names), self.rng.choice(self.known.blobs)
        headers = {"Range": self.range_header()} if self.chance(0.8) else {}
        method = self.rng.choice(["GET", "HEAD"])
        return FuzzRequest(method, f"/v2/{name}/blobs/{digest}", headers=headers)

    def request(self, routes: list[Route]) -> FuzzRequest:
        if self.known.documents and self.chance(0.15):
            return self.manifest_push()
        if self.known.blobs and self.chance(0.1):
            return self.blob_fetch()
        if self.chance(0.05):
            odd = ["/v2", "/", "/v2//", "/v2/_catalog/x", "/" + self.junk().lstrip("/")]
            path, aimed, route_methods = self.rng.choice(odd), "", ["GET"]
        else:
            route = self.rng.choice(routes)
            path, aimed = self.path(route), route.path
            route_methods = sorted(route.methods or {"GET"})
        method = self.rng.choice(route_methods if self.chance(0.85) else METHODS)
        body = self.body() if method in ("PUT", "POST", "PATCH") or self.chance(0.1) else b""
        return FuzzRequest(method, path, self.query(), self.headers(body), body, aimed)


def problem(request: FuzzRequest, response: httpx.Response) -> str | None:
    """What is wrong with `response`, if anything."""
    if response.status_code >= 500:
        return f"status {response.status_code}: {response.content[:300]!r}"
    for name, value in response.headers.raw:  # what uvicorn refuses to send (a 500 there)
        if UNSENDABLE_HEADER_VALUE.search(value):
            return f"header {name!r} holds a control character: {value[:200]!r}"
    if request.method == "HEAD":
        return (
            f"HEAD answered with a body: {response.content[:100]!r}" if response.content else None
        )
    if response.status_code < 400:
        return None
    if not response.headers.get("content-type", "").startswith("application/json"):
        return f"{response.status_code} with content-type {response.headers.get('content-type')!r}"
    try:
        errors = response.json()["errors"]
        assert isinstance(errors, list) and errors
        for error in errors:
            assert error["code"] in ERROR_CODES and isinstance(error["message"], str)
    except (ValueError, KeyError, TypeError, AssertionError):
        return (
            f"{response.status_code} body is not the spec's error JSON: {response.content[:300]!r}"
        )
    return None


async def send(client: httpx.AsyncClient, request: FuzzRequest) -> httpx.Response | str:
    built = client.build_request(
        request.method,
        request.path,
        params=request.params,
        headers={
            name: value.encode(errors="surrogatepass") for name, value in request.headers.items()
        },
        content=request.body,
    )
    try:
        return await client.send(built)
    except Exception as error:  # the application raised through the ASGI transport
        return f"raised {type(error).__name__}: {str(error)[:300]}"


async def fuzz(
    client: httpx.AsyncClient,
    generator: Generator,
    routes: list[Route],
    count: int,
    learn: Callable[[httpx.Response], None] = lambda response: None,
) -> tuple[list[str], Counter[str]]:
    failures: list[str] = []
    seen: Counter[str] = Counter()  # "METHOD status", and "route template" aimed at
    for _ in range(count):
        request = generator.request(routes)
        outcome = await send(client, request)
        if isinstance(outcome, str):
            failures.append(f"{outcome}\n    {request.describe()}")
            continue
        seen[f"{request.method} {outcome.status_code}"] += 1
        seen[request.route] += 1
        if found := problem(request, outcome):
            failures.append(f"{found}\n    {request.describe()}")
        learn(outcome)
    return failures, seen


def report(failures: list[str], label: str) -> str:
    shown = "\n".join(failures[:15])
    return (
        f"{len(failures)} bad answers ({label}); replay with FUZZ_SEED={SEED}"
        f" FUZZ_REQUESTS={REQUESTS}:\n{shown}"
    )


async def seed_registry(client: httpx.AsyncClient) -> Known:
    """An image, an index over it, a referrer to it, and a few open upload sessions."""
    digest, raw = await push_image(client, NAME, "v1")
    image = json.loads(raw)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, raw)],
    }
    index_raw = json.dumps(index).encode()
    assert (await put_manifest(client, NAME, "multi", index_raw, OCI_INDEX)).status_code == 201
    empty = await push_blob(client, NAME, b"{}")
    referrer = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": image["layers"],
        "subject": descriptor(OCI_MANIFEST, raw),
        "annotations": {"org.example": "value"},
    }
    referrer_raw = json.dumps(referrer).encode()
    response = await put_manifest(client, NAME, digest_of(referrer_raw), referrer_raw, OCI_MANIFEST)
    assert response.status_code == 201, response.text
    uploads = []
    for _ in range(4):
        started = await client.post(f"/v2/{NAME}/blobs/uploads/")
        uploads.append(started.headers["location"].rsplit("/", 1)[1])
    blobs = [image["config"]["digest"], image["layers"][0]["digest"], empty]
    return Known(
        names=[NAME],
        tags=["v1", "multi"],
        blobs=blobs,
        manifests=[digest, digest_of(index_raw), digest_of(referrer_raw)],
        uploads=uploads,
        documents=[image, index, referrer],
    )


def learner(known: Known) -> Callable[[httpx.Response], None]:
    """Aim later requests at the upload sessions earlier ones opened."""

    def learn(response: httpx.Response) -> None:
        location = response.headers.get("location", "")
        match = re.fullmatch(r"/v2/.+/blobs/uploads/([0-9a-f]+)", location.split("?")[0])
        if match and match.group(1) not in known.uploads:
            known.uploads.append(match.group(1))
            del known.uploads[:-16]

    return learn


def routes_of(app: Starlette) -> list[Route]:
    return [route for route in app.routes if isinstance(route, Route)]


@pytest.mark.parametrize("driver", ["memory", "filesystem"], indirect=True)
async def test_fuzz_registry_endpoints(driver: StorageDriver) -> None:
    app = create_app(Config(), driver)
    assert all(route in routes_of(app) for route in ROUTES)  # the API, and the ops endpoints
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        known = await seed_registry(client)
        generator = Generator(random.Random(SEED), known)
        failures, seen = await fuzz(client, generator, routes_of(app), REQUESTS, learner(known))
    assert not failures, report(failures, "registry endpoints")
    assert all(seen[route.path] for route in routes_of(app)), seen  # every endpoint tried
    succeeded = sum(n for answer, n in seen.items() if re.fullmatch(r"[A-Z]+ 2\d\d", answer))
    assert succeeded > REQUESTS / 10, f"few requests got anywhere: {seen}"


async def issue_tokens(client: httpx.AsyncClient) -> list[str]:
    """An access token and a refresh token of alice's."""
    issued = await client.get(
        TOKEN_PATH,
        params={"service": "dockyard", "scope": f"repository:{NAME}:pull,push"},
        headers=basic("alice", "alice-pw"),
    )
    assert issued.status_code == 200, issued.text
    form = {"grant_type": "password", "username": "alice", "password": "alice-pw"}
    offline = await client.post(TOKEN_PATH, data={**form, "access_type": "offline"})
    assert offline.status_code == 200, offline.text
    return [issued.json()["token"], offline.json()["refresh_token"]]


@pytest.mark.parametrize("mode", ["token", "basic"])
async def test_fuzz_access_control(tmp_path: Path, mode: str) -> None:
    """The token endpoint, and the registry behind credentials good, bad and damaged."""
    users = write_users(tmp_path / "htpasswd", {"alice": "alice-pw"})
    config = Config(
        auth={"mode": mode, "htpasswd": str(users)},
        storage={"filesystem": {"root": str(tmp_path / "data")}},
    )
    app = create_app(config)
    transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 4321))
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        tokens = await issue_tokens(client) if mode == "token" else []
        known = Known([NAME], ["v1"], [], [], [], [{"grant_type": "password"}])
        generator = TokenGenerator(random.Random(SEED), known, tokens)
        failures, _ = await fuzz(client, generator, routes_of(app), REQUESTS // 4)
    assert not failures, report(failures, f"auth mode {mode}")


class TokenGenerator(Generator):
    """Token requests (scopes, services, grant types, credentials good and bad), and
    registry requests with tokens good, damaged and made up."""

    def __init__(self, rng: random.Random, known: Known, tokens: list[str]) -> None:
        super().__init__(rng, known)
        self.tokens = tokens

    def token(self) -> str:
        if not self.tokens:
            return self.junk()
        token = self.rng.choice(self.tokens)
        if self.chance(0.3):
            return token
        position = self.rng.randrange(len(token))
        damaged = token[:position] + self.rng.choice("A_-.=é/ ") + token[position + 1 :]
        return self.rng.choice([damaged, token[:position], token + "." + token, self.junk()])

    def scope(self) -> str:
        return self.rng.choice(
            [
                f"repository:{self.name()}:pull,push",
                f"repository:{self.name()}:{self.junk(10)}",
                "registry:catalog:*",
                "repository::pull",
                ":::",
                self.junk(),
            ]
        )

    def request(self, routes: list[Route]) -> FuzzRequest:
        if self.tokens and self.chance(0.6):  # (no tokens: basic mode, no token endpoint)
            method = self.rng.choice(["GET", "POST", "GET", "POST", "HEAD", "PUT"])
            body = self.body() if method != "GET" else b""
            return FuzzRequest(method, TOKEN_PATH, self.query(), self.headers(body), body)
        return super().request(routes)

    def query(self) -> list[tuple[str, str]]:
        params = [("scope", self.scope()) for _ in range(self.rng.randint(0, 3))]
        for key, value in [
            ("service", self.rng.choice(["dockyard", "other", ""])),
            ("offline_token", self.rng.choice(["true", "false", self.junk(5)])),
            ("client_id", self.junk()),
            ("account", self.rng.choice(["alice", self.junk()])),
        ]:
            if self.chance(0.5):
                params.append((key, value))
        return params + super().query()

    def headers(self, body: bytes) -> dict[str, str]:
        headers = super().headers(body)
        if self.chance(0.05):  # a good password, rarely: bcrypt is slow on purpose
            headers.update(basic("alice", "alice-pw"))
        elif self.chance(0.8):
            headers["Authorization"] = self.rng.choice(
                [
                    basic("alice", self.junk())["Authorization"],
                    basic(self.junk(), self.junk())["Authorization"],
                    "Basic " + self.junk(),
                    "Bearer " + self.token(),
                    "Bearer " + self.token(),
                    "bearer " + self.token(),
                    self.junk(),
                ]
            )
        return headers

    def body(self) -> bytes:
        if self.chance(0.3):
            return super().body()
        form = {
            "grant_type": self.rng.choice(["password", "refresh_token", "", self.junk(8)]),
            "username": self.rng.choice(["alice", self.junk()]),
            "password": self.rng.choice(["alice-pw", self.junk()]),
            "refresh_token": self.token(),
            "scope": self.scope(),
            "service": self.rng.choice(["dockyard", self.junk(5)]),
            "access_type": self.rng.choice(["offline", ""]),
            "client_id": self.junk(),
        }
        chosen = {key: value for key, value in form.items() if self.chance(0.7)}
        return urlencode(chosen).encode()
