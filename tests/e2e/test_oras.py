"""ORAS artifacts through oras-py: push, pull back byte-identical, and referrers of a subject."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import oras.container
import oras.oci
import oras.provider
import pytest
import requests

from tests.support.server import RegistryProcess

pytestmark = pytest.mark.e2e

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
TOOL_TYPE = "application/vnd.dockyard.tool.v1"
SBOM_TYPE = "application/spdx+json"
SIGNATURE_CONFIG = "application/vnd.dockyard.signature.config.v1+json"


class ArtifactClient(oras.provider.Registry):
    """oras-py's client. Its `push` cannot set a manifest's `artifactType`, so `artifact_type`
    adds it with the empty config descriptor, as the ORAS CLI does for OCI 1.1 artifacts."""

    def __init__(self, host: str) -> None:
        super().__init__(hostname=host, insecure=True)
        self.artifact_type: str | None = None

    def upload_manifest(
        self, manifest: dict[str, Any], container: oras.container.Container
    ) -> requests.Response:
        if self.artifact_type is not None:
            config = {**manifest["config"], "mediaType": EMPTY_CONFIG}
            manifest = {**manifest, "artifactType": self.artifact_type, "config": config}
        return super().upload_manifest(manifest, container)

    def push_artifact(self, target: str, artifact_type: str | None, **options: Any) -> str:
        """Push with oras-py and return the manifest digest the registry answered."""
        self.artifact_type = artifact_type
        try:
            response = self.push(target, disable_path_validation=True, quiet=True, **options)
        finally:
            self.artifact_type = None
        assert response.status_code == 201, response.text
        if subject := options.get("subject"):
            assert response.headers["OCI-Subject"] == subject.digest
        return response.headers["Docker-Content-Digest"]


@pytest.fixture
def client(registry: RegistryProcess) -> ArtifactClient:
    return ArtifactClient(registry.host)


def referrers(registry: RegistryProcess, name: str, digest: str, **query: str) -> httpx.Response:
    response = httpx.get(f"{registry.url}/v2/{name}/referrers/{digest}", params=query)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == OCI_INDEX
    index = response.json()
    assert (index["schemaVersion"], index["mediaType"]) == (2, OCI_INDEX)
    return response


def test_push_pull_and_find_referrers(
    registry: RegistryProcess, client: ArtifactClient, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    files.mkdir()
    tool = files / "tool.bin"
    tool.write_bytes(os.urandom(3 << 20))
    notes = files / "notes.txt"
    notes.write_text("release notes\n")
    target = f"{registry.host}/team/tool:1.0"
    tool_digest = client.push_artifact(
        target, TOOL_TYPE, files=[str(tool), str(notes)], do_chunked=True, chunk_size=1 << 20
    )

    manifest = httpx.get(f"{registry.url}/v2/team/tool/manifests/1.0")
    assert manifest.headers["docker-content-digest"] == tool_digest
    assert manifest.json()["artifactType"] == TOOL_TYPE
    pulled = client.pull(target, outdir=str(tmp_path / "pulled"))
    assert sorted(Path(path).name for path in pulled) == ["notes.txt", "tool.bin"]
    for path in pulled:
        assert Path(path).read_bytes() == (files / Path(path).name).read_bytes()

    subject = oras.oci.Subject(OCI_MANIFEST, tool_digest, len(manifest.content))
    sbom = files / "sbom.spdx.json"
    sbom.write_text('{"spdxVersion": "SPDX-2.3"}')
    sbom_annotations = {"org.opencontainers.image.created": "2026-11-24T00:00:00Z"}
    sbom_digest = client.push_artifact(
        f"{registry.host}/team/tool:sbom",
        SBOM_TYPE,
        files=[str(sbom)],
        subject=subject,
        manifest_annotations=sbom_annotations,
    )
    # An ORAS 1.0-style artifact: its type is only the config's media type.
    signature_config = files / "signature.json"
    signature_config.write_text('{"signer": "ci"}')
    signature_digest = client.push_artifact(
        f"{registry.host}/team/tool:signature",
        None,
        files=[str(notes)],
        subject=subject,
        manifest_config=f"{signature_config}:{SIGNATURE_CONFIG}",
    )

    found = referrers(registry, "team/tool", tool_digest).json()["manifests"]
    by_digest = {descriptor["digest"]: descriptor for descriptor in found}
    assert set(by_digest) == {sbom_digest, signature_digest}
    sbom_descriptor = by_digest[sbom_digest]
    assert sbom_descriptor["mediaType"] == OCI_MANIFEST
    assert sbom_descriptor["artifactType"] == SBOM_TYPE
    assert sbom_descriptor["annotations"] == sbom_annotations
    sbom_manifest = httpx.get(f"{registry.url}/v2/team/tool/manifests/{sbom_digest}")
    assert sbom_descriptor["size"] == len(sbom_manifest.content)
    assert by_digest[signature_digest]["artifactType"] == SIGNATURE_CONFIG

    filtered = referrers(registry, "team/tool", tool_digest, artifactType=SBOM_TYPE)
    assert filtered.headers["oci-filters-applied"] == "artifactType"
    assert [d["digest"] for d in filtered.json()["manifests"]] == [sbom_digest]
    assert referrers(registry, "team/tool", sbom_digest).json()["manifests"] == []
