"""Grammar of repository names, tags and digests (OCI distribution and image specs).

Everything that later becomes part of a storage path or key goes through these
parsers first, so no traversal (`..`, absolute paths, odd characters) can reach
a driver.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from oci.errors import ErrorCode, RegistryError

NAME_MAX_LENGTH: Final = 255
_NAME = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_DIGEST = re.compile(r"([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")

# Algorithms we can verify, with the exact length and alphabet of their encoded part.
_ALGORITHMS: Final[dict[str, int]] = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[a-f0-9]+")


def is_name(name: str) -> bool:
    return len(name) <= NAME_MAX_LENGTH and _NAME.fullmatch(name) is not None


def parse_name(name: str) -> str:
    """Return `name` if it is a valid repository name, else raise NAME_INVALID."""
    if not is_name(name):
        raise RegistryError(
            ErrorCode.NAME_INVALID,
            f"invalid repository name {name[:NAME_MAX_LENGTH]!r}",
            detail={"name": name[:NAME_MAX_LENGTH]},
        )
    return name


def is_tag(reference: str) -> bool:
    return _TAG.fullmatch(reference) is not None


def parse_tag(tag: str) -> str:
    if not is_tag(tag):
        raise RegistryError(ErrorCode.TAG_INVALID, f"invalid tag {tag[:128]!r}", status=400)
    return tag


def supported_algorithm(algorithm: str) -> str:
    if algorithm not in _ALGORITHMS:
        raise RegistryError(
            ErrorCode.DIGEST_INVALID,
            f"unsupported digest algorithm {algorithm[:32]!r}; use one of {sorted(_ALGORITHMS)}",
        )
    return algorithm


@dataclass(frozen=True, slots=True)
class Digest:
    """A validated content digest such as `sha256:<64 hex>`."""

    algorithm: str
    encoded: str

    @classmethod
    def parse(cls, value: str) -> Digest:
        algorithm, _, encoded = value.partition(":")
        if _ALGORITHMS.get(algorithm) == len(encoded) and _HEX.fullmatch(encoded):
            return cls(algorithm, encoded)  # the common case, in one check (scans parse many)
        match = _DIGEST.fullmatch(value)
        if not match:
            raise RegistryError(ErrorCode.DIGEST_INVALID, f"invalid digest {value[:160]!r}")
        algorithm, encoded = match.groups()
        supported_algorithm(algorithm)
        if len(encoded) != _ALGORITHMS[algorithm] or not _HEX.fullmatch(encoded):
            raise RegistryError(ErrorCode.DIGEST_INVALID, f"invalid {algorithm} digest {value!r}")
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"


def is_digest_of(algorithm: str, encoded: str) -> bool:
    """Whether `algorithm` and `encoded` make a valid digest (e.g. from a storage listing)."""
    length = _ALGORITHMS.get(algorithm)
    return length == len(encoded) and _HEX.fullmatch(encoded) is not None


def is_digest(reference: str) -> bool:
    return ":" in reference
