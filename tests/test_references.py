"""The grammar that guards every storage path: names, tags, digests and keys."""

from __future__ import annotations

import pytest

from oci.errors import RegistryError
from oci.references import Digest, parse_name, parse_tag
from storage.driver import InvalidKeyError, check_key


@pytest.mark.parametrize("value", ["sha256:" + "a" * 64, "sha512:" + "0" * 128])
def test_digest_roundtrip(value: str) -> None:
    assert str(Digest.parse(value)) == value


@pytest.mark.parametrize(
    "value",
    ["sha256:" + "A" * 64, "sha256:" + "a" * 63, "sha384:" + "a" * 96, "sha256:../" + "a" * 61,
     "sha256", ":abc", "sha256:" + "a" * 64 + "/x"],
)  # fmt: skip
def test_bad_digests(value: str) -> None:
    with pytest.raises(RegistryError) as error:
        Digest.parse(value)
    assert error.value.code.name == "DIGEST_INVALID"


@pytest.mark.parametrize("name", ["..", "../etc", "a/../b", "/abs", "a/./b", "a\\b", ""])
def test_names_that_could_escape(name: str) -> None:
    with pytest.raises(RegistryError):
        parse_name(name)


@pytest.mark.parametrize("tag", ["..", "../x", "a/b", ""])
def test_tags_that_could_escape(tag: str) -> None:
    with pytest.raises(RegistryError):
        parse_tag(tag)


@pytest.mark.parametrize("key", ["../x", "a/../b", "/abs", "a//b", "a/./b", "", "a/b/", "a\x00b"])
def test_driver_keys_are_checked_again(key: str) -> None:
    with pytest.raises(InvalidKeyError):
        check_key(key)
