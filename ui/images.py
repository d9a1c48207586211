"""What the repository, image and delete pages show, read through the store the API uses.

Every function here reads one repository only: its tags (resolved a page at a time),
its manifests, their config blobs (small ones), pull times and referrers.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from oci.errors import RegistryError
from oci.manifests import INDEX_TYPES, parse_manifest
from oci.references import Digest
from storage import paths
from storage.driver import PathNotFoundError
from storage.store import Store

_READS_AT_ONCE = 16
CONFIG_MAX_BYTES = 1 << 20  # larger config blobs are not read for the image page
IMAGE_CONFIG_TYPES = frozenset(
    {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
)
TITLE = "org.opencontainers.image.title"


def _document(raw: bytes) -> dict[str, Any]:
    """A stored manifest as JSON (stored manifests were checked to be JSON objects)."""
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _descriptors(document: dict[str, Any], key: str) -> list[dict[str, Any]]:
    values = document.get(key)
    return [v for v in values if isinstance(v, dict)] if isinstance(values, list) else []


def _size(descriptor: dict[str, Any]) -> int:
    size = descriptor.get("size")
    return size if isinstance(size, int) and not isinstance(size, bool) else 0


def platform_of(descriptor: dict[str, Any]) -> str:
    """`os/architecture[/variant]` of an index entry, or "unknown"."""
    platform = descriptor.get("platform")
    if not isinstance(platform, dict):
        return "unknown"
    parts = [platform.get("os"), platform.get("architecture"), platform.get("variant")]
    return "/".join(str(part) for part in parts if part) or "unknown"


def _annotations(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(key): str(item) for key, item in value.items()}


async def _gather_bounded(*calls: Any) -> list[Any]:
    limit = asyncio.Semaphore(_READS_AT_ONCE)

    async def bounded(call: Any) -> Any:
        async with limit:
            return await call

    return list(await asyncio.gather(*map(bounded, calls)))


@dataclass(frozen=True, slots=True)
class ManifestSummary:
    digest: Digest
    media_type: str
    size: int  # the manifest, its config and layers; for an index, its platforms' too
    platforms: list[str]
    artifact_type: str | None


async def manifest_summary(store: Store, name: str, digest: Digest) -> ManifestSummary | None:
    stored = await store.manifests.get(name, digest)
    if stored is None:
        return None
    document = _document(stored.raw)
    size = len(stored.raw) + _content_size(document)
    platforms = []
    if stored.media_type in INDEX_TYPES:
        children = _descriptors(document, "manifests")
        platforms = [platform_of(child) for child in children if "platform" in child]
        found = await _gather_bounded(*(_child_manifest(store, name, c) for c in children))
        size += sum(_size(child) for child in children)
        size += sum(_content_size(_document(raw)) for raw in found if raw is not None)
    artifact_type = document.get("artifactType")
    return ManifestSummary(
        digest,
        stored.media_type,
        size,
        platforms,
        artifact_type if isinstance(artifact_type, str) else None,
    )


def _content_size(document: dict[str, Any]) -> int:
    """The bytes of an image manifest's config and layers."""
    size = sum(_size(d) for d in _descriptors(document, "layers"))
    config = document.get("config")
    return size + (_size(config) if isinstance(config, dict) else 0)


async def _child_manifest(store: Store, name: str, child: dict[str, Any]) -> bytes | None:
    try:
        digest = Digest.parse(str(child.get("digest")))
    except RegistryError:
        return None
    stored = await store.manifests.get(name, digest)
    return stored.raw if stored else None


@dataclass(frozen=True, slots=True)
class TagRow:
    tag: str
    manifest: ManifestSummary | None  # None: the tag's manifest is gone (being deleted)
    pushed: float | None
    pulled: float | None


async def _tag_row(store: Store, name: str, tag: str) -> TagRow:
    try:
        pushed: float | None = (await store.driver.stat(paths.tag_link(name, tag))).modified
    except PathNotFoundError:
        pushed = None
    digest = await store.manifests.resolve(name, tag)
    if digest is None:
        return TagRow(tag, None, pushed, None)
    summary, pulled = await asyncio.gather(
        manifest_summary(store, name, digest), store.manifests.pulls.last_pulled(name, digest)
    )
    return TagRow(tag, summary, pushed, pulled)


async def tag_rows(store: Store, name: str, tags: list[str]) -> list[TagRow]:
    """A row for each of `tags` (a page of them), in that order."""
    return await _gather_bounded(*(_tag_row(store, name, tag) for tag in tags))


async def tag_targets(store: Store, name: str) -> dict[str, Digest]:
    """Every tag of the repository and its manifest (one read per tag)."""
    tags = await store.manifests.tags(name)
    digests = await _gather_bounded(*(store.manifests.resolve(name, tag) for tag in tags))
    return {tag: d for tag, d in zip(tags, digests, strict=True) if d is not None}


@dataclass(frozen=True, slots=True)
class UntaggedRow:
    manifest: ManifestSummary
    pushed: float | None
    pulled: float | None


async def untagged(store: Store, name: str) -> list[tuple[Digest, float]]:
    """The manifests no tag points at (children of indexes and referrers among them),
    newest push first, with their push times: a read per tag, a stat per manifest."""
    tagged = set((await tag_targets(store, name)).values())
    digests = [d for d in await store.manifests.digests(name) if d not in tagged]

    async def pushed(digest: Digest) -> float | None:
        try:
            return (await store.driver.stat(paths.revision_link(name, digest))).modified
        except PathNotFoundError:
            return None  # deleted meanwhile

    times = await _gather_bounded(*map(pushed, digests))
    found = [(d, t) for d, t in zip(digests, times, strict=True) if t is not None]
    return sorted(found, key=lambda pair: (-pair[1], str(pair[0])))


async def untagged_rows(
    store: Store, name: str, shown: list[tuple[Digest, float]]
) -> list[UntaggedRow]:
    """A row for each of `shown` (a page of `untagged`), in that order."""

    async def row(digest: Digest, pushed: float) -> UntaggedRow | None:
        summary, pulled = await asyncio.gather(
            manifest_summary(store, name, digest), store.manifests.pulls.last_pulled(name, digest)
        )
        return None if summary is None else UntaggedRow(summary, pushed, pulled)

    rows = await _gather_bounded(*(row(digest, pushed) for digest, pushed in shown))
    return [r for r in rows if r is not None]


@dataclass(frozen=True, slots=True)
class Layer:
    digest: str
    media_type: str
    size: int
    title: str | None  # an artifact's file name (its title annotation)
    annotations: dict[str, str]


@dataclass(frozen=True, slots=True)
class HistoryStep:
    created: str | None
    created_by: str
    empty_layer: bool
    comment: str | None


@dataclass(frozen=True, slots=True)
class ImageConfig:
    created: str | None
    platform: str
    entrypoint: list[str] | None
    cmd: list[str] | None
    working_dir: str | None
    user: str | None
    ports: list[str]
    env: list[str]
    labels: dict[str, str]
    history: list[HistoryStep]


@dataclass(frozen=True, slots=True)
class Platform:
    digest: str
    platform: str
    size: int
    media_type: str
    present: bool


@dataclass
class ImageDetail:
    name: str
    digest: Digest
    media_type: str
    size: int
    kind: str  # "image", "index" or "artifact"
    artifact_type: str | None
    config_digest: str | None
    config_media_type: str | None
    config: ImageConfig | None
    config_note: str | None  # why the config is not shown
    layers: list[Layer]
    platforms: list[Platform]
    subject: str | None
    annotations: dict[str, str]
    tags: list[str]
    referrers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pulled: float | None = None


def _strings(value: Any) -> list[str] | None:
    if isinstance(value, list):
        return [str(item) for item in value]
    return None


def _optional_string(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int | float) and value != "" else None


def parse_config(raw: bytes) -> ImageConfig | None:
    """The parts of an image config (OCI or docker) the image page shows."""
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    run = document.get("config") if isinstance(document.get("config"), dict) else {}
    history = []
    for step in document.get("history") or []:
        if isinstance(step, dict):
            history.append(
                HistoryStep(
                    _optional_string(step.get("created")),
                    str(step.get("created_by") or ""),
                    bool(step.get("empty_layer")),
                    _optional_string(step.get("comment")),
                )
            )
    parts = [document.get("os"), document.get("architecture"), document.get("variant")]
    ports = run.get("ExposedPorts")
    return ImageConfig(
        created=_optional_string(document.get("created")),
        platform="/".join(str(part) for part in parts if part) or "unknown",
        entrypoint=_strings(run.get("Entrypoint")),
        cmd=_strings(run.get("Cmd")),
        working_dir=_optional_string(run.get("WorkingDir")),
        user=_optional_string(run.get("User")),
        ports=sorted(str(port) for port in ports) if isinstance(ports, dict) else [],
        env=_strings(run.get("Env")) or [],
        labels=_annotations(run.get("Labels")),
        history=history,
    )


async def _config(
    store: Store, descriptor: dict[str, Any]
) -> tuple[ImageConfig | None, str | None]:
    """The parsed config, or None and why it is not shown."""
    media_type = descriptor.get("mediaType")
    if media_type not in IMAGE_CONFIG_TYPES:
        return None, None  # an artifact's config: nothing to read in it
    try:
        digest = Digest.parse(str(descriptor.get("digest")))
    except RegistryError:
        return None, "its digest is not valid"
    size = await store.blobs.size(digest)
    if size is None:
        return None, "its blob is not in the registry"
    if size > CONFIG_MAX_BYTES:
        return None, f"it is larger than {CONFIG_MAX_BYTES} bytes"
    try:
        raw = await store.blobs.get(digest)
    except PathNotFoundError:
        return None, "its blob is not in the registry"
    config = parse_config(raw)
    return config, None if config is not None else "it is not a JSON object"


def _layers(document: dict[str, Any]) -> list[Layer]:
    layers = []
    for descriptor in _descriptors(document, "layers"):
        annotations = _annotations(descriptor.get("annotations"))
        layers.append(
            Layer(
                str(descriptor.get("digest", "")),
                str(descriptor.get("mediaType", "")),
                _size(descriptor),
                annotations.get(TITLE),
                annotations,
            )
        )
    return layers


async def _platforms(store: Store, name: str, document: dict[str, Any]) -> list[Platform]:
    children = _descriptors(document, "manifests")

    async def present(child: dict[str, Any]) -> bool:
        try:
            return await store.manifests.exists(name, Digest.parse(str(child.get("digest"))))
        except RegistryError:
            return False

    found = await _gather_bounded(*map(present, children))
    return [
        Platform(
            str(child.get("digest", "")),
            platform_of(child),
            _size(child),
            str(child.get("mediaType", "")),
            here,
        )
        for child, here in zip(children, found, strict=True)
    ]


def group_referrers(descriptors: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Referrers by artifact type (their media type when they name none)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for descriptor in descriptors:
        kind = descriptor.get("artifactType") or descriptor.get("mediaType") or "unknown"
        groups.setdefault(str(kind), []).append(
            {**descriptor, "annotations": _annotations(descriptor.get("annotations"))}
        )
    return dict(sorted(groups.items()))


async def image_detail(store: Store, name: str, digest: Digest) -> ImageDetail | None:
    stored = await store.manifests.get(name, digest)
    if stored is None:
        return None
    document = _document(stored.raw)
    summary, targets, referrers, pulled = await asyncio.gather(
        manifest_summary(store, name, digest),
        tag_targets(store, name),
        store.manifests.referrers(name, digest),
        store.manifests.pulls.last_pulled(name, digest),
    )
    config_descriptor = document.get("config") if isinstance(document.get("config"), dict) else {}
    config, note = await _config(store, config_descriptor) if config_descriptor else (None, None)
    try:
        artifact_type = parse_manifest(stored.raw, stored.media_type, digest).artifact_type
    except RegistryError:
        artifact_type = None
    if stored.media_type in INDEX_TYPES:
        kind = "index"
    elif config_descriptor.get("mediaType") in IMAGE_CONFIG_TYPES and not document.get(
        "artifactType"
    ):
        kind = "image"
    else:
        kind = "artifact"
    subject = document.get("subject")
    return ImageDetail(
        name=name,
        digest=digest,
        media_type=stored.media_type,
        size=summary.size if summary else len(stored.raw),
        kind=kind,
        artifact_type=artifact_type,
        config_digest=str(config_descriptor["digest"]) if "digest" in config_descriptor else None,
        config_media_type=str(config_descriptor.get("mediaType") or "") or None,
        config=config,
        config_note=note,
        layers=_layers(document),
        platforms=await _platforms(store, name, document) if kind == "index" else [],
        subject=str(subject.get("digest")) if isinstance(subject, dict) else None,
        annotations=_annotations(document.get("annotations")),
        tags=sorted(tag for tag, target in targets.items() if target == digest),
        referrers=group_referrers(referrers),
        pulled=pulled,
    )


@dataclass(frozen=True, slots=True)
class DeleteImpact:
    """What goes with a delete, for its confirmation."""

    name: str
    tag: str | None  # deleting a tag (else the manifest `digest`)
    digest: Digest | None  # None: the tag is half-written and points nowhere
    tags: list[str]  # tags on the digest: that also go (a manifest) or stay (a tag)
    referrers: list[dict[str, Any]]  # referrers of the manifest (they go with it)


async def delete_impact(
    store: Store, name: str, tag: str | None, digest: Digest | None
) -> DeleteImpact:
    targets = await tag_targets(store, name)
    if tag is not None:
        digest = targets.get(tag)
    others = sorted(t for t, target in targets.items() if target == digest and t != tag)
    referrers: list[dict[str, Any]] = []
    if tag is None and digest is not None:  # a manifest's referrers go with it
        referrers = await store.manifests.referrers(name, digest)
    return DeleteImpact(name, tag, digest, others, referrers)
