"""skopeo copy (OCI and Docker v2 schema 2), list-tags and delete against a running registry."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.required import require_tool
from tests.support.server import RegistryProcess

pytestmark = pytest.mark.e2e

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT = ", ".join([OCI_MANIFEST, DOCKER_MANIFEST])


def skopeo(*args: str) -> str:
    result = subprocess.run(
        [require_tool("skopeo"), *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"skopeo {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def push(source: str, destination: str, *options: str) -> None:
    skopeo("copy", *options, "--dest-tls-verify=false", source, destination)


def layout_digest(layout: Path, tag: str) -> str:
    """Digest of the manifest an `oci:` layout holds under `tag`."""
    index = json.loads((layout / "index.json").read_text())
    for descriptor in index["manifests"]:
        if descriptor["annotations"]["org.opencontainers.image.ref.name"] == tag:
            return descriptor["digest"]
    raise AssertionError(f"{tag} not in {index}")


def layout_blob(layout: Path, digest: str) -> bytes:
    algorithm, hex_digest = digest.split(":")
    data = (layout / "blobs" / algorithm / hex_digest).read_bytes()
    assert f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}" == digest
    return data


def referenced_digests(manifest: bytes) -> list[str]:
    parsed = json.loads(manifest)
    return [parsed["config"]["digest"], *(layer["digest"] for layer in parsed["layers"])]


def registry_manifest(registry: RegistryProcess, repo: str, reference: str) -> httpx.Response:
    return httpx.get(f"{registry.url}/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT})


@pytest.fixture
def source_layout(image_archive: Path, tmp_path: Path) -> Path:
    layout = tmp_path / "source"
    skopeo("copy", f"docker-archive:{image_archive}", f"oci:{layout}:src")
    return layout


def test_copy_both_formats_back_list_and_delete(
    registry: RegistryProcess, source_layout: Path, tmp_path: Path
) -> None:
    remote = f"docker://{registry.host}/team/app"
    source_digest = layout_digest(source_layout, "src")
    source_manifest = layout_blob(source_layout, source_digest)
    blobs = referenced_digests(source_manifest)

    push(f"oci:{source_layout}:src", f"{remote}:oci", "--format", "oci")
    oci = registry_manifest(registry, "team/app", "oci")
    assert oci.status_code == 200
    assert oci.headers["content-type"] == OCI_MANIFEST
    assert oci.headers["docker-content-digest"] == source_digest
    assert oci.content == source_manifest

    push(f"oci:{source_layout}:src", f"{remote}:v2s2", "--format", "v2s2")
    v2s2 = registry_manifest(registry, "team/app", "v2s2")
    assert v2s2.status_code == 200
    assert v2s2.headers["content-type"] == DOCKER_MANIFEST
    assert json.loads(v2s2.content)["mediaType"] == DOCKER_MANIFEST
    v2s2_digest = v2s2.headers["docker-content-digest"]
    assert v2s2_digest == f"sha256:{hashlib.sha256(v2s2.content).hexdigest()}"
    assert referenced_digests(v2s2.content) == blobs

    back = tmp_path / "back"
    skopeo("copy", "--src-tls-verify=false", f"{remote}:oci", f"oci:{back}:oci")
    assert layout_digest(back, "oci") == source_digest
    for digest in [source_digest, *blobs]:
        assert layout_blob(back, digest) == layout_blob(source_layout, digest)
    skopeo(
        "copy", "--preserve-digests", "--src-tls-verify=false", f"{remote}:v2s2", f"oci:{back}:v2s2"
    )
    assert layout_digest(back, "v2s2") == v2s2_digest
    assert layout_blob(back, v2s2_digest) == v2s2.content

    listed = json.loads(skopeo("list-tags", "--tls-verify=false", remote))
    assert listed["Tags"] == ["oci", "v2s2"]

    skopeo("delete", "--tls-verify=false", f"{remote}:oci")
    gone = registry_manifest(registry, "team/app", source_digest)
    assert gone.status_code == 404
    assert gone.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert registry_manifest(registry, "team/app", "oci").status_code == 404
    assert json.loads(skopeo("list-tags", "--tls-verify=false", remote))["Tags"] == ["v2s2"]
    assert registry_manifest(registry, "team/app", "v2s2").status_code == 200


def write_blob(layout: Path, data: bytes) -> str:
    hex_digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / hex_digest).write_bytes(data)
    return f"sha256:{hex_digest}"


def add_index(layout: Path, source_tag: str, tag: str) -> str:
    """Tag in `layout` an OCI index of the image under `source_tag` and an annotated
    variant of it (for a second platform); returns the index digest."""
    amd64 = layout_digest(layout, source_tag)
    amd64_raw = layout_blob(layout, amd64)
    variant = {**json.loads(amd64_raw), "annotations": {"org.example.variant": "arm64"}}
    arm64_raw = json.dumps(variant).encode()
    arm64 = write_blob(layout, arm64_raw)
    children = [
        (amd64, len(amd64_raw), "amd64"),
        (arm64, len(arm64_raw), "arm64"),
    ]
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": size,
                "platform": {"architecture": architecture, "os": "linux"},
            }
            for digest, size, architecture in children
        ],
    }
    index_raw = json.dumps(index).encode()
    digest = write_blob(layout, index_raw)
    layout_index = json.loads((layout / "index.json").read_text())
    layout_index["manifests"].append(
        {
            "mediaType": OCI_INDEX,
            "digest": digest,
            "size": len(index_raw),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }
    )
    (layout / "index.json").write_text(json.dumps(layout_index))
    return digest


def test_copy_all_of_an_index_and_back(
    registry: RegistryProcess, source_layout: Path, tmp_path: Path
) -> None:
    remote = f"docker://{registry.host}/team/multi:1"
    index_digest = add_index(source_layout, "src", "multi")

    push(f"oci:{source_layout}:multi", remote, "--all", "--format", "oci")
    stored = httpx.get(f"{registry.url}/v2/team/multi/manifests/1", headers={"Accept": OCI_INDEX})
    assert stored.headers["content-type"] == OCI_INDEX
    assert stored.headers["docker-content-digest"] == index_digest
    assert stored.content == layout_blob(source_layout, index_digest)
    for child in json.loads(stored.content)["manifests"]:
        fetched = registry_manifest(registry, "team/multi", child["digest"])
        assert fetched.content == layout_blob(source_layout, child["digest"])

    back = tmp_path / "back"
    skopeo("copy", "--all", "--src-tls-verify=false", remote, f"oci:{back}:multi")
    assert layout_digest(back, "multi") == index_digest
    for child in json.loads(stored.content)["manifests"]:
        assert layout_blob(back, child["digest"]) == layout_blob(source_layout, child["digest"])
