"""What retention reads from each driver: tags and manifests with their storage times,
pull records, and what indexes and referrers reference."""

from __future__ import annotations

import json
import time

import httpx
from starlette.applications import Starlette

from collector.facts import repository_facts
from oci.references import Digest
from storage.store import Store
from tests.api.helpers import OCI_INDEX, OCI_MANIFEST, descriptor, push_image, put_manifest

REPO = "team/app"


def store_of(app: Starlette) -> Store:
    return app.state.store


async def test_facts_of_a_repository(app: Starlette, client: httpx.AsyncClient) -> None:
    before = time.time() - 120  # the storage's clock, allowing some skew and 1 s resolution
    image, raw = await push_image(client, REPO, "v1")
    index_raw = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor(OCI_MANIFEST, raw)]}
    ).encode()
    assert (await put_manifest(client, REPO, "multi", index_raw, OCI_INDEX)).status_code == 201
    signature, _ = await push_image(
        client, REPO, "sig", seed="sig", subject=descriptor(OCI_MANIFEST, raw)
    )
    assert (await client.get(f"/v2/{REPO}/manifests/v1")).status_code == 200
    await store_of(app).manifests.pulls.close()

    facts = await repository_facts(store_of(app), REPO)
    assert {(t.tag, str(t.digest)) for t in facts.tags} == {
        ("v1", image),
        ("multi", str(Digest.of(index_raw))),
        ("sig", signature),
    }
    assert all(t.pushed > before for t in facts.tags)
    manifests = {str(digest): m for digest, m in facts.manifests.items()}
    assert set(manifests) == {image, signature, str(Digest.of(index_raw))}
    assert manifests[str(Digest.of(index_raw))].references == {Digest.parse(image)}
    assert manifests[signature].subject == Digest.parse(image)
    pulled = manifests[image].pulled
    assert pulled is not None and pulled > before
    assert manifests[signature].pulled is None  # never pulled
    assert all(m.pushed > before for m in manifests.values())


async def test_a_deleted_manifest_leaves_no_pull_record(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    image, raw = await push_image(client, REPO, "v1")
    assert (await client.get(f"/v2/{REPO}/manifests/v1")).status_code == 200
    pulls = store_of(app).manifests.pulls
    await pulls.close()
    assert await pulls.last_pulled(REPO, Digest.parse(image)) is not None
    assert (await client.delete(f"/v2/{REPO}/manifests/{image}")).status_code == 202
    assert await pulls.last_pulled(REPO, Digest.parse(image)) is None
    assert (await put_manifest(client, REPO, "v1", raw, OCI_MANIFEST)).status_code == 201
    facts = await repository_facts(store_of(app), REPO)
    assert facts.manifests[Digest.parse(image)].pulled is None  # pushed again: a new life
