"""Retention rules: what `collector.retention.condemned` condemns, rule by rule.

Repositories are pushed through the API over the memory driver; the tests then set
the storage times (the memory driver's modification times) the rules read.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from collector.retention import Condemned, condemned
from oci.references import Digest
from registry.app import create_app
from registry.config import Config, ImmutableTagRule, RetentionRule
from storage import paths
from storage.memory import MemoryDriver
from storage.store import Store
from tests.api.helpers import OCI_INDEX, OCI_MANIFEST, descriptor, push_image, put_manifest

NOW = 1_000_000_000.0
DAY = 86400.0
REPO = "team/app"


@pytest.fixture
def driver() -> MemoryDriver:
    return MemoryDriver()


@pytest.fixture
def app(driver: MemoryDriver) -> Starlette:
    return create_app(Config(), driver)


@pytest.fixture
def store(app: Starlette) -> Store:
    return app.state.store


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as made:
        yield made


def rule(**fields: Any) -> RetentionRule:
    return RetentionRule.model_validate({"repositories": ["**"], **fields})


class Repo:
    """Pushes to one repository and dates what it pushed, in days before NOW."""

    def __init__(self, client: httpx.AsyncClient, driver: MemoryDriver, name: str = REPO) -> None:
        self.client, self.driver, self.name = client, driver, name

    async def image(self, tag: str, days_ago: float, seed: str | None = None, **extra: Any) -> str:
        """Push an image tagged `tag` (untagged if `tag` is empty); its digest."""
        digest, _ = await push_image(
            self.client, self.name, tag or "untagged", seed or tag, **extra
        )
        if not tag:
            response = await self.client.delete(f"/v2/{self.name}/manifests/untagged")
            assert response.status_code == 202
        self.date_manifest(digest, days_ago)
        if tag:
            self.date_tag(tag, days_ago)
        return digest

    async def tag(self, tag: str, digest: str, days_ago: float) -> None:
        raw = (await self.client.get(f"/v2/{self.name}/manifests/{digest}")).content
        media_type = json.loads(raw)["mediaType"]
        response = await put_manifest(self.client, self.name, tag, raw, media_type)
        assert response.status_code == 201
        self.date_tag(tag, days_ago)

    def date_tag(self, tag: str, days_ago: float) -> None:
        self._date(paths.tag_link(self.name, tag), days_ago)

    def date_manifest(self, digest: str, days_ago: float) -> None:
        self._date(paths.revision_link(self.name, Digest.parse(digest)), days_ago)

    def date_pull(self, digest: str, days_ago: float) -> None:
        self.driver.objects[paths.pulled_marker(self.name, Digest.parse(digest))] = b""
        self._date(paths.pulled_marker(self.name, Digest.parse(digest)), days_ago)

    def _date(self, key: str, days_ago: float) -> None:
        assert key in self.driver.objects, key
        self.driver.modified[key] = NOW - days_ago * DAY


@pytest.fixture
def repo(client: httpx.AsyncClient, driver: MemoryDriver) -> Repo:
    return Repo(client, driver)


async def doomed(
    store: Store, rules: list[RetentionRule], name: str = REPO, **kw: Any
) -> list[str]:
    """The references condemned, tags by name and manifests by digest."""
    return [c.reference for c in await condemned(store, name, rules, NOW, **kw)]


async def test_nothing_is_condemned_without_rules(repo: Repo, store: Store) -> None:
    await repo.image("old", days_ago=1000)
    await repo.image("", days_ago=1000, seed="untagged")
    assert await doomed(store, []) == []
    assert await doomed(store, [RetentionRule(repositories=["other/**"], keep_last=0)]) == []


async def test_keep_last_keeps_the_most_recently_pushed_tags(repo: Repo, store: Store) -> None:
    image = await repo.image("a", days_ago=30)
    await repo.image("b", days_ago=10)
    await repo.tag("c", image, days_ago=20)  # the same manifest, tagged more recently than a
    await repo.image("d", days_ago=5)
    assert await doomed(store, [rule(keep_last=2)]) == ["a", "c"]
    assert await doomed(store, [rule(keep_last=3)]) == ["a"]
    assert await doomed(store, [rule(keep_last=4)]) == []


async def test_keep_tags_globs_and_regexes(repo: Repo, store: Store) -> None:
    for tag in ("v1.0", "v2", "latest", "rc-12", "rc-x", "build-7"):
        await repo.image(tag, days_ago=100)
    rules = [rule(keep_last=0, keep_tags=["v*", "latest", "/rc-[0-9]+/"])]
    assert await doomed(store, rules) == ["build-7", "rc-x"]


async def test_keep_newer_than(repo: Repo, store: Store) -> None:
    await repo.image("old", days_ago=8)
    await repo.image("new", days_ago=6)
    assert await doomed(store, [rule(keep_newer_than="7d")]) == ["old"]


async def test_keep_pulled_within(repo: Repo, store: Store) -> None:
    pulled = await repo.image("pulled", days_ago=100)
    repo.date_pull(pulled, days_ago=3)
    stale = await repo.image("stale", days_ago=100)
    repo.date_pull(stale, days_ago=40)
    await repo.image("never-pulled-old", days_ago=100)
    await repo.image("never-pulled-new", days_ago=2)  # counts as pulled when pushed
    rules = [rule(keep_pulled_within="30d")]
    assert await doomed(store, rules) == ["never-pulled-old", "stale"]


async def test_a_pull_through_the_api_is_what_keep_pulled_within_reads(
    repo: Repo, store: Store, client: httpx.AsyncClient
) -> None:
    await repo.image("pulled", days_ago=100)
    await repo.image("headed", days_ago=100)
    assert (await client.get(f"/v2/{REPO}/manifests/pulled")).status_code == 200
    assert (await client.head(f"/v2/{REPO}/manifests/headed")).status_code == 200  # not a pull
    await store.manifests.pulls.close()  # let the background write land
    assert await condemned(store, REPO, [rule(keep_pulled_within="1d")], NOW + 1000 * DAY) == [
        Condemned("tag", REPO, "headed", "retention.policies[0] (repositories: **): "
                  "keep_pulled_within 1d"),
    ]  # fmt: skip


async def test_any_keep_condition_keeps_a_tag(repo: Repo, store: Store) -> None:
    await repo.image("v1", days_ago=100)  # keep_tags
    await repo.image("recent", days_ago=1)  # keep_newer_than
    await repo.image("last", days_ago=50)  # keep_last 1 (newest but "recent")
    pulled = await repo.image("pulled", days_ago=90)  # keep_pulled_within
    repo.date_pull(pulled, days_ago=1)
    await repo.image("gone", days_ago=95)
    repo.date_tag("recent", days_ago=0.5)
    repo.date_tag("last", days_ago=0.1)
    rules = [
        rule(keep_last=1, keep_tags=["v*"], keep_newer_than="2d", keep_pulled_within="7d"),
    ]
    found = await condemned(store, REPO, rules, NOW)
    assert [c.reference for c in found] == ["gone"]
    assert found[0].rule == (
        "retention.policies[0] (repositories: **): "
        "keep_last 1; keep_tags v*; keep_newer_than 2d; keep_pulled_within 7d"
    )


async def test_untagged_after_condemns_old_untagged_manifests_only(
    repo: Repo, store: Store
) -> None:
    old = await repo.image("", days_ago=10, seed="old")
    await repo.image("", days_ago=1, seed="young")
    await repo.image("tagged", days_ago=100)
    found = await condemned(store, REPO, [rule(untagged_after="7d")], NOW)
    assert found == [
        Condemned(
            "manifest", REPO, old, "retention.policies[0] (repositories: **): untagged_after 7d"
        )
    ]


async def test_untagged_manifests_stay_unless_untagged_after_is_set(
    repo: Repo, store: Store
) -> None:
    await repo.image("", days_ago=1000, seed="pinned by digest")
    await repo.image("old", days_ago=1000)
    assert await doomed(store, [rule(keep_newer_than="1d")]) == ["old"]  # the tag only


async def test_children_of_a_kept_index_and_subjects_of_kept_referrers_stay(
    repo: Repo, store: Store, client: httpx.AsyncClient
) -> None:
    child = await repo.image("", days_ago=100, seed="amd64")
    child_raw = (await client.get(f"/v2/{REPO}/manifests/{child}")).content
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX,
         "manifests": [descriptor(OCI_MANIFEST, child_raw)]}
    ).encode()  # fmt: skip
    assert (await put_manifest(client, REPO, "multi", index, OCI_INDEX)).status_code == 201
    repo.date_tag("multi", days_ago=100)
    subject = await repo.image("", days_ago=100, seed="signed")
    subject_raw = (await client.get(f"/v2/{REPO}/manifests/{subject}")).content
    await repo.image("signature", days_ago=100, subject=descriptor(OCI_MANIFEST, subject_raw))
    orphan = await repo.image("", days_ago=100, seed="orphan")
    rules = [rule(keep_newer_than="1000d", untagged_after="7d")]
    assert await doomed(store, rules) == [orphan]


async def test_referrers_of_a_kept_manifest_stay(
    repo: Repo, store: Store, client: httpx.AsyncClient
) -> None:
    image = await repo.image("v1", days_ago=100)
    raw = (await client.get(f"/v2/{REPO}/manifests/{image}")).content
    await repo.image("", days_ago=100, seed="sbom", subject=descriptor(OCI_MANIFEST, raw))
    assert await doomed(store, [rule(keep_tags=["v*"], untagged_after="7d")]) == []


async def test_manifests_whose_tags_are_condemned_go_too_index_before_children(
    repo: Repo, store: Store, client: httpx.AsyncClient
) -> None:
    child = await repo.image("", days_ago=100, seed="amd64")
    child_raw = (await client.get(f"/v2/{REPO}/manifests/{child}")).content
    index_raw = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX,
         "manifests": [descriptor(OCI_MANIFEST, child_raw)]}
    ).encode()  # fmt: skip
    assert (await put_manifest(client, REPO, "old", index_raw, OCI_INDEX)).status_code == 201
    index = str(Digest.of(index_raw))
    repo.date_tag("old", days_ago=100)
    repo.date_manifest(index, days_ago=100)
    subject = await repo.image("", days_ago=100, seed="signed")
    subject_raw = (await client.get(f"/v2/{REPO}/manifests/{subject}")).content
    signature = await repo.image(
        "", days_ago=100, seed="sig", subject=descriptor(OCI_MANIFEST, subject_raw)
    )
    kept = await repo.image("new", days_ago=1)
    found = await condemned(store, REPO, [rule(keep_newer_than="7d", untagged_after="7d")], NOW)
    assert (found[0].kind, found[0].reference) == ("tag", "old")
    manifests = [c.reference for c in found if c.kind == "manifest"]
    assert sorted(manifests) == sorted([index, child, subject, signature])
    assert manifests.index(index) < manifests.index(child)  # deletable in this order
    assert kept not in manifests


async def test_keep_pulled_within_keeps_untagged_manifests_pulled_by_digest(
    repo: Repo, store: Store
) -> None:
    pinned = await repo.image("", days_ago=100, seed="pinned")
    repo.date_pull(pinned, days_ago=1)
    forgotten = await repo.image("", days_ago=100, seed="forgotten")
    rules = [rule(keep_pulled_within="30d", untagged_after="7d")]
    assert await doomed(store, rules) == [forgotten]


async def test_the_first_matching_rule_decides(
    client: httpx.AsyncClient, driver: MemoryDriver, store: Store
) -> None:
    ci, other = Repo(client, driver, "ci/app"), Repo(client, driver, "team/app")
    for days, tag in enumerate(("t1", "t2", "t3")):
        await ci.image(tag, days_ago=10 - days)
        await other.image(tag, days_ago=10 - days)
    rules = [
        RetentionRule(repositories=["ci/**"], keep_last=1),
        RetentionRule(repositories=["**"], keep_last=2),
        RetentionRule(repositories=["team/**"], keep_last=0),  # never consulted: ** came first
    ]
    found = await condemned(store, "ci/app", rules, NOW)
    assert [c.reference for c in found] == ["t1", "t2"]
    assert {c.rule for c in found} == {"retention.policies[0] (repositories: ci/**): keep_last 1"}
    found = await condemned(store, "team/app", rules, NOW)
    assert [(c.reference, c.rule) for c in found] == [
        ("t1", "retention.policies[1] (repositories: **): keep_last 2")
    ]


async def test_nothing_younger_than_grace_is_condemned(repo: Repo, store: Store) -> None:
    tagged = await repo.image("just-pushed", days_ago=0.01)
    young = await repo.image("", days_ago=0.01, seed="young")
    old = await repo.image("", days_ago=2, seed="old")
    rules = [rule(keep_last=0, untagged_after="0s")]
    assert sorted(await doomed(store, rules)) == sorted(["just-pushed", tagged, young, old])
    assert await doomed(store, rules, grace=DAY) == [old]


async def test_immutable_tags_are_never_condemned(repo: Repo, store: Store) -> None:
    await repo.image("v1", days_ago=100)
    await repo.image("build-1", days_ago=100)
    immutable = [ImmutableTagRule(repositories=["team/**"], tags=["v*"])]
    assert await doomed(store, [rule(keep_last=0)], immutable=immutable) == ["build-1"]


async def test_half_written_entries_are_no_tags_or_manifests(
    repo: Repo, store: Store, driver: MemoryDriver
) -> None:
    await repo.image("old", days_ago=100)
    driver.objects[paths.tag_link(REPO, "cut-off")] = b""  # a PUT cut off (SeaweedFS keeps it)
    driver.objects[paths.revision_link(REPO, Digest.of(b"cut off"))] = b""
    rules = [rule(keep_last=0, untagged_after="1d")]
    found = await condemned(store, REPO, rules, NOW)
    assert [(c.kind, c.reference) for c in found][:1] == [("tag", "old")]
    assert "cut-off" not in [c.reference for c in found]
    assert str(Digest.of(b"cut off")) not in [c.reference for c in found]
