"""The run applies `retention.policies` (collector/retention.py decides): condemned tags
and manifests go (printed with their rule), then what only they referenced is swept."""

from __future__ import annotations

from dataclasses import replace

import httpx

from registry.config import RetentionRule
from storage.driver import StorageDriver
from tests.api.helpers import OCI_MANIFEST, digest_of, push_image
from tests.collector.support import NO_GRACE, age, run_gc

RULE = RetentionRule(repositories=["team/*"], keep_last=1, untagged_after=0)


async def test_condemned_tags_and_manifests_go_with_their_blobs(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    old, _ = await push_image(client, "team/app", "v1", seed="old")
    await age(driver)
    await push_image(client, "team/app", "v2", seed="new")
    await age(driver)
    options = replace(NO_GRACE, retention=(RULE,))

    dry, deletions = await run_gc(driver, options, dry_run=True)
    assert (dry.tags, dry.manifests) == (1, 1)
    tag = next(d for d in deletions if d.kind == "tag")
    assert tag.what == "team/app:v1" and "keep_last" in tag.why
    assert (await client.get("/v2/team/app/manifests/v1")).status_code == 200

    result, deletions = await run_gc(driver, options)
    assert (result.tags, result.manifests, result.blobs) == (1, 1, 3)
    assert {d.what for d in deletions if d.kind == "manifest"} == {f"team/app@{old}"}
    assert (await client.get("/v2/team/app/manifests/v1")).status_code == 404
    got = await client.get("/v2/team/app/manifests/v2", headers={"Accept": OCI_MANIFEST})
    assert got.status_code == 200
    for item in [got.json()["config"], *got.json()["layers"]]:
        blob = await client.get(f"/v2/team/app/blobs/{item['digest']}")
        assert blob.status_code == 200 and digest_of(blob.content) == item["digest"]
