"""The repository list: the catalog's names, searched, sorted and cut to one page, with the
usage summary (`storage.usage`) of each repository shown.

Cost per request: one listing of the catalog (as `_catalog` does) and one small summary
read per repository *shown*, so the first page costs the same with 10 repositories or
10,000. Sorting by last push is the exception: it needs the summary of every matching
repository (read with bounded concurrency), so it grows with the registry; sorting by
name, the default, does not.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass

from oci.globs import compile_glob
from storage.store import Store
from storage.usage import Summary

_READS_AT_ONCE = 32
SORTS = ("name", "push")


@dataclass(frozen=True, slots=True)
class RepositoryRow:
    name: str
    summary: Summary | None  # None: not written yet (the next push or collection writes it)


@dataclass(frozen=True, slots=True)
class RepositoryPage:
    rows: list[RepositoryRow]
    matching: int  # repositories the search matched (among those the viewer may pull)
    page: int
    pages: int


def search_matcher(query: str) -> Callable[[str], bool]:
    """A glob (`team/*`, `**/app`: the access rules' globs) when the query has `*`,
    else a case-insensitive substring."""
    query = query.strip()
    if "*" in query:
        pattern = compile_glob(query)
        return lambda name: pattern.fullmatch(name) is not None
    lowered = query.lower()
    return lambda name: lowered in name.lower()


async def summaries(store: Store, names: list[str]) -> list[Summary | None]:
    limit = asyncio.Semaphore(_READS_AT_ONCE)

    async def read(name: str) -> Summary | None:
        async with limit:
            return await store.usage.summary(name)

    return list(await asyncio.gather(*map(read, names)))


def _newest_first(row: RepositoryRow) -> tuple[float, str]:
    pushed = row.summary.last_push if row.summary and row.summary.last_push else 0.0
    return (-pushed, row.name)


async def repository_page(
    store: Store,
    visible: Callable[[str], bool],
    query: str,
    sort: str,
    page: int,
    page_size: int,
) -> RepositoryPage:
    """Page `page` (from 1) of the repositories `visible` lets through that match `query`."""
    matches = search_matcher(query)
    names = [name for name in await store.catalog.names() if visible(name) and matches(name)]
    pages = max(math.ceil(len(names) / page_size), 1)
    page = min(max(page, 1), pages)
    start = (page - 1) * page_size
    if sort == "push":
        rows = [
            RepositoryRow(*pair) for pair in zip(names, await summaries(store, names), strict=True)
        ]
        rows = sorted(rows, key=_newest_first)[start : start + page_size]
    else:
        shown = names[start : start + page_size]
        rows = [
            RepositoryRow(*pair) for pair in zip(shown, await summaries(store, shown), strict=True)
        ]
    return RepositoryPage(rows, len(names), page, pages)
