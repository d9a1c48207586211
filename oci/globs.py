"""The glob language of the config: repository patterns (access rules, retention,
immutable tags) and tag patterns.

`*` matches within one path component, `**` across components; everything else
matches itself. Tags have no `/`, so for them `*` and `**` are the same, and a tag
pattern written between slashes, `/^v[0-9]+$/`, is a regular expression instead
(matching the whole tag).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache


@lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\*\*|\*)", pattern)
    translated = {"**": ".*", "*": "[^/]*"}
    return re.compile("".join(translated.get(part) or re.escape(part) for part in parts))


def matches_any(patterns: Iterable[str], value: str) -> bool:
    return any(compile_glob(pattern).fullmatch(value) for pattern in patterns)


@lru_cache(maxsize=1024)
def compile_tag_pattern(pattern: str) -> re.Pattern[str]:
    """A tag glob, or a regex if written `/.../`; raises ValueError if it is not valid."""
    if len(pattern) >= 2 and pattern.startswith("/") and pattern.endswith("/"):
        try:
            return re.compile(pattern[1:-1])
        except re.error as error:
            raise ValueError(f"{pattern!r} is not a valid regular expression: {error}") from None
    return compile_glob(pattern)


def tag_matches_any(patterns: Iterable[str], tag: str) -> bool:
    return any(compile_tag_pattern(pattern).fullmatch(tag) for pattern in patterns)
