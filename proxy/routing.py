"""Which requests go to which upstream, and under which local name their content is cached.

- `<prefix>/<name>` is the upstream's `<name>`, cached as `<prefix>/<name>`.
- A name under no prefix that is not a local repository goes to the upstream whose
  `registry` is the request's `?ns=` (containerd's mirrors send it), else to the
  `default` upstream (dockerd's `registry-mirrors`). It is cached under that upstream's
  prefix too, so mirror and prefix pulls share one copy; Docker Hub's one-part names
  are its `library/` images.
- Writes into a prefix are refused: that namespace belongs to the upstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from oci.errors import ErrorCode, RegistryError
from oci.globs import matches_any
from oci.references import parse_name
from proxy.upstream import Upstream
from storage.catalog import Catalog

DOCKER_HUB = "docker.io"


@dataclass(frozen=True, slots=True)
class Target:
    upstream: Upstream
    remote: str  # the name at the upstream
    local: str  # the repository the content is cached in


class Routes:
    def __init__(self, upstreams: Sequence[Upstream]) -> None:
        self._upstreams = list(upstreams)
        self._default = next((u for u in upstreams if u.config.default), None)
        self._by_registry = {u.config.registry: u for u in upstreams if u.config.registry}
        self._prefixes = tuple(u.prefix + "/" for u in upstreams)
        self._falls_through = self._default is not None or bool(self._by_registry)

    def owner(self, name: str) -> Upstream | None:
        """The upstream whose prefix `name` is under."""
        if not name.startswith(self._prefixes):
            return None
        return next((u for u in self._upstreams if name.startswith(u.prefix + "/")), None)

    def may_go_upstream(self, name: str, fallback: bool = True) -> bool:
        """False when `target` would surely answer None: a name under no prefix, with no
        upstream taking such names (or `fallback` False). Pulls of local repositories ask
        this first: it costs no query parsing and no lookup."""
        return name.startswith(self._prefixes) or (fallback and self._falls_through)

    async def target(
        self, name: str, ns: str | None, catalog: Catalog, fallback: bool = True
    ) -> Target | None:
        """Where a pull of `name` goes; None: it is a local repository's. `fallback`
        False: only names under a prefix go upstream."""
        upstream = self.owner(name)
        if upstream is not None:
            remote = name.removeprefix(upstream.prefix + "/")
        elif not fallback:
            return None
        else:
            upstream = self._by_registry.get(ns) if ns else self._default
            if upstream is None or await catalog.exists(name):
                return None
            remote = name
            if upstream.config.registry == DOCKER_HUB and "/" not in remote:
                remote = f"library/{remote}"
        patterns = upstream.config.repositories
        if patterns and not matches_any(patterns, remote):
            raise RegistryError(
                ErrorCode.DENIED,
                f"{remote} is not among the repositories mirrored from upstream "
                f"{upstream.prefix} ({upstream.url})",
            )
        return Target(upstream, remote, parse_name(f"{upstream.prefix}/{remote}"))

    def refuse_writes(self, name: str) -> None:
        """Raise DENIED for a push or delete into a proxied namespace."""
        upstream = self.owner(name)
        if upstream is not None:
            raise RegistryError(
                ErrorCode.DENIED,
                f"{name} is a pull-through cache of {upstream.url}: pushes and deletes under "
                f"{upstream.prefix}/ are refused",
            )
