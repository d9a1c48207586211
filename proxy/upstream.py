"""One upstream registry over HTTP, with its authentication.

Anonymous, basic, or the docker token flow: a `401` with a `Bearer` challenge sends
us to the challenge's realm for a token of scope `repository:<name>:pull` (with our
credentials, if any), which is kept until it expires, per scope, in a bounded map.
"""

from __future__ import annotations

import base64
import contextlib
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator

import httpcore
import httpx

from oci.manifests import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from registry.config import UpstreamConfig

MANIFEST_ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))
_TOKENS_KEPT = 1024
_TOKEN_MARGIN = 5.0  # seconds before its expiry a token is no longer used
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')

# httpcore reads a response body 64 KiB at a time, each read through a timeout scope
# and the HTTP parser; uvloop hands over up to 256 KiB per socket read. Reading that
# much at once took a third less event-loop CPU for a blob fill (bench/RESULTS-proxy.md).
# A class attribute (httpcore has no option for it): it applies to every httpx client
# in the process, which only makes their reads fewer.
httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = max(
    httpcore.AsyncHTTP11Connection.READ_NUM_BYTES, 256 << 10
)


class UpstreamError(Exception):
    """The upstream did not answer usefully: unreachable, too slow, a 5xx, a 429, our
    credentials refused, or content that does not match its digest."""

    def __init__(self, upstream: Upstream, cause: str, retry_after: str | None = None) -> None:
        super().__init__(f"upstream {upstream.prefix} ({upstream.url}): {cause}")
        self.rate_limited = retry_after is not None
        self.retry_after = retry_after


class Upstream:
    def __init__(
        self,
        config: UpstreamConfig,
        credentials: tuple[str, str] | None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.prefix = config.prefix
        self.url = config.url.rstrip("/")
        self._credentials = credentials
        self._client = httpx.AsyncClient(
            base_url=self.url,
            timeout=httpx.Timeout(config.timeout),
            transport=transport,
            follow_redirects=True,  # blob downloads go to a CDN; httpx drops our auth there
        )
        self._tokens: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._basic = False  # the upstream asked for basic credentials

    async def close(self) -> None:
        await self._client.aclose()

    @contextlib.asynccontextmanager
    async def open(
        self, method: str, name: str, path: str, accept: str | None = None
    ) -> AsyncIterator[httpx.Response]:
        """Send `method /v2/<name>/<path>`, answering one auth challenge; yields the
        response (body unread) when it is a 2xx or a 404, else raises UpstreamError."""
        scope = f"repository:{name}:pull"
        url = f"/v2/{name}/{path}"
        headers = {"Accept": accept} if accept else {}
        try:
            response = await self._send(method, url, headers, scope)
            if response.status_code == 401:
                challenge = response.headers.get("www-authenticate", "")
                await response.aclose()
                await self._answer(challenge, scope)
                response = await self._send(method, url, headers, scope)
            try:
                self._check(response)
                yield response
            finally:
                await response.aclose()
        except httpx.HTTPError as error:
            raise UpstreamError(self, _describe(error)) from None

    async def _send(
        self, method: str, url: str, headers: dict[str, str], scope: str
    ) -> httpx.Response:
        request = self._client.build_request(method, url, headers={**headers, **self._auth(scope)})
        return await self._client.send(request, stream=True)

    def _check(self, response: httpx.Response) -> None:
        status = response.status_code
        if status < 300 or status == 404:
            return
        if status == 429:
            raise UpstreamError(
                self, "rate limited (429)", response.headers.get("retry-after", "60")
            )
        if status in (401, 403):
            # Docker Hub answers 401 for a repository that does not exist, too
            raise UpstreamError(
                self,
                f"refused access ({status}): no such repository, or our credentials may not"
                " pull it",
            )
        raise UpstreamError(self, f"answered {status}")

    def _auth(self, scope: str) -> dict[str, str]:
        token = self._tokens.get(scope)
        if token is not None and token[1] > time.monotonic():
            return {"Authorization": f"Bearer {token[0]}"}
        if self._basic and self._credentials is not None:
            user, password = self._credentials
            encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
            return {"Authorization": f"Basic {encoded}"}
        return {}

    async def _answer(self, challenge: str, scope: str) -> None:
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            if self._credentials is None:
                raise UpstreamError(self, "asks for credentials and none are configured")
            self._basic = True
            return
        if scheme.lower() != "bearer":
            raise UpstreamError(self, f"sent an unknown challenge {challenge[:64]!r}")
        fields = dict(_CHALLENGE_PARAM.findall(params))
        if "realm" not in fields:
            raise UpstreamError(self, "sent a Bearer challenge without a realm")
        query = {"scope": scope}
        if "service" in fields:
            query["service"] = fields["service"]
        auth = httpx.BasicAuth(*self._credentials) if self._credentials else None
        answer = await self._client.get(fields["realm"], params=query, auth=auth)
        if answer.status_code != 200:
            raise UpstreamError(self, f"token endpoint answered {answer.status_code}")
        try:
            body = answer.json()
            token = body.get("token") or body["access_token"]
            lifetime = float(body.get("expires_in", 60))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UpstreamError(self, "token endpoint sent no token") from None
        self._tokens[scope] = (token, time.monotonic() + max(lifetime - _TOKEN_MARGIN, 1.0))
        self._tokens.move_to_end(scope)
        while len(self._tokens) > _TOKENS_KEPT:
            self._tokens.popitem(last=False)


def _describe(error: httpx.HTTPError) -> str:
    if isinstance(error, httpx.TimeoutException):
        return f"no answer within the timeout ({type(error).__name__})"
    if isinstance(error, httpx.ConnectError):
        return f"unreachable ({error or 'connection failed'})"
    return f"{type(error).__name__}: {error}"
