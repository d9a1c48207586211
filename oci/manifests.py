"""Manifest formats the registry accepts, and what it reads out of them.

`parse_manifest` checks a pushed document and returns what storage needs: its
media type, the blobs and manifests it references, its subject and the
descriptor it would have in a referrers list. It never changes the bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from oci.errors import ErrorCode, RegistryError
from oci.references import Digest

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1: Final = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
IMAGE_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES: Final = IMAGE_TYPES | INDEX_TYPES

# Layers that may live outside the registry (Windows base layers, found at their `urls`).
FOREIGN_LAYER_TYPES: Final = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)


# Descriptor sizes are int64 in the image spec (and in Go clients).
MAX_SIZE: Final = (1 << 63) - 1
# Manifests are shallow (an index entry's annotations sit at depth 4); the limit keeps
# every later parse of a stored manifest far from Python's recursion limit.
MAX_DEPTH: Final = 64
# Far beyond any number a manifest holds, far below what makes `int()` refuse or crawl.
MAX_DIGITS: Final = 100


def _invalid(message: str) -> RegistryError:
    return RegistryError(ErrorCode.MANIFEST_INVALID, message)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _integer(digits: str) -> int:
    if len(digits) > MAX_DIGITS:
        raise ValueError(f"an integer has more than {MAX_DIGITS} digits")
    return int(digits)


def _depth(document: Any) -> int:
    """How deeply arrays and objects nest in a parsed document (iteratively)."""
    deepest, pending = 0, [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, depth)
            children = value.values() if isinstance(value, dict) else value
            pending.extend((child, depth + 1) for child in children)
    return deepest


def _load_json(raw: bytes) -> dict[str, Any]:
    """Parse strictly: UTF-8 JSON text (RFC 8259) with no NaN or Infinity, no lone
    surrogates, integers of at most `MAX_DIGITS` digits, at most `MAX_DEPTH` levels."""
    try:
        document = json.loads(raw, parse_constant=_refuse_constant, parse_int=_integer)
    except RecursionError:
        raise _invalid(f"manifest nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, or from the hooks
        raise _invalid(f"manifest is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise _invalid("manifest must be a JSON object")
    if _depth(document) > MAX_DEPTH:
        raise _invalid(f"manifest nests deeper than {MAX_DEPTH} levels")
    try:
        json.dumps(document, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise _invalid("manifest is not valid JSON: a \\u escape is a lone surrogate") from None
    return document


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    nondistributable: bool = False  # a foreign layer: clients may fetch it elsewhere
    has_urls: bool = False  # ... and these name where

    @classmethod
    def parse(cls, value: Any, where: str) -> Descriptor:
        if not isinstance(value, dict):
            raise _invalid(f"{where} must be a descriptor object")
        media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
        if not isinstance(media_type, str) or not media_type:
            raise _invalid(f"{where}.mediaType must be a non-empty string")
        if not isinstance(digest, str):
            raise _invalid(f"{where}.digest must be a string")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
            raise _invalid(f"{where}.size must be an integer from 0 to {MAX_SIZE}")
        try:
            parsed = Digest.parse(digest)
        except RegistryError as error:
            raise _invalid(f"{where}.digest: {error.message}") from None
        nondistributable = media_type in FOREIGN_LAYER_TYPES
        return cls(media_type, parsed, size, nondistributable, bool(value.get("urls")))


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated manifest and what the registry reads out of it."""

    raw: bytes
    digest: Digest
    media_type: str
    config: Descriptor | None = None  # images only, like `layers`
    layers: tuple[Descriptor, ...] = ()
    children: tuple[Descriptor, ...] = ()  # indexes only
    subject: Digest | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    def referrer_descriptor(self) -> dict[str, Any]:
        """This manifest as an entry of its subject's referrers list (spec end-12)."""
        descriptor: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": len(self.raw),
        }
        if self.artifact_type:
            descriptor["artifactType"] = self.artifact_type
        if self.annotations:
            descriptor["annotations"] = self.annotations
        return descriptor


def _media_type(document: dict[str, Any], content_type: str | None) -> str:
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise _invalid("mediaType must be a string")
    if declared in DOCKER_SCHEMA1 or content_type in DOCKER_SCHEMA1:
        raise _invalid(
            "Docker schema 1 manifests are deprecated and not accepted; "
            "push with a current client (schema 2 or OCI)"
        )
    version = document.get("schemaVersion")
    if version == 1:
        raise _invalid(
            "schemaVersion 1 manifests are not accepted; push a schema 2 or OCI manifest"
        )
    if version != 2 or type(version) is not int:  # 2.0 and true are not 2
        raise _invalid("schemaVersion must be the integer 2")
    if declared and content_type and content_type in MANIFEST_TYPES and declared != content_type:
        raise _invalid(f"mediaType {declared!r} does not match Content-Type {content_type!r}")
    media_type = declared or content_type
    if media_type not in MANIFEST_TYPES:
        # OCI documents may omit mediaType; recognise them by shape.
        if declared is None and "manifests" in document:
            media_type = OCI_INDEX
        elif declared is None and "config" in document:
            media_type = OCI_MANIFEST
        else:
            raise _invalid(
                f"unsupported manifest media type {media_type!r}; expected one of "
                f"{sorted(MANIFEST_TYPES)}"
            )
    return media_type


def _descriptors(document: dict[str, Any], key: str, required: bool) -> tuple[Descriptor, ...]:
    values = document.get(key)
    if values is None and not required:
        return ()
    if not isinstance(values, list):
        raise _invalid(f"{key} must be a list of descriptors")
    return tuple(Descriptor.parse(value, f"{key}[{i}]") for i, value in enumerate(values))


def _annotations(document: dict[str, Any]) -> dict[str, str]:
    annotations = document.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise _invalid("annotations must map strings to strings")
    return annotations


def parse_manifest(raw: bytes, content_type: str | None, digest: Digest) -> Manifest:
    """Validate a pushed manifest whose bytes hash to `digest`."""
    document = _load_json(raw)
    if content_type:
        content_type = content_type.split(";", 1)[0].strip().lower() or None
    media_type = _media_type(document, content_type)

    artifact_type = document.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise _invalid("artifactType must be a string")
    subject = document.get("subject")
    subject_digest = Descriptor.parse(subject, "subject").digest if subject is not None else None

    if media_type in IMAGE_TYPES:
        config = Descriptor.parse(document.get("config"), "config")
        layers = _descriptors(document, "layers", required=media_type == DOCKER_MANIFEST)
        return Manifest(
            raw=raw,
            digest=digest,
            media_type=media_type,
            config=config,
            layers=layers,
            subject=subject_digest,
            artifact_type=artifact_type or config.media_type,
            annotations=_annotations(document),
        )
    return Manifest(
        raw=raw,
        digest=digest,
        media_type=media_type,
        children=_descriptors(document, "manifests", required=True),
        subject=subject_digest,
        artifact_type=artifact_type,
        annotations=_annotations(document),
    )


def referenced_digests(raw: bytes) -> frozenset[str]:
    """Digests a stored (already validated) manifest needs: its config, layers and
    child manifests. Not its subject: a referrer does not keep its subject alive."""
    document = json.loads(raw)
    descriptors = [document.get("config"), *(document.get("layers") or [])]
    descriptors += document.get("manifests") or []
    return frozenset(d["digest"] for d in descriptors if isinstance(d, dict) and "digest" in d)
