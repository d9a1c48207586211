"""Resource scopes of the docker token flow: `repository:team/app:pull,push`.

Grammar: `type[(class)]:name:action[,action…]`; the name may itself hold one `:`
(a registry host with a port), so the type is split at the first colon and the
actions at the last. Classes are deprecated and ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_TYPE = re.compile(r"([a-z0-9]+)(?:\([a-z0-9]+\))?")
_ACTION = re.compile(r"[a-z]*|\*")


class ScopeError(ValueError):
    pass


@dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: frozenset[str]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"

    def claim(self) -> dict[str, object]:
        """The entry of a token's `access` claim."""
        return {"type": self.type, "name": self.name, "actions": sorted(self.actions)}


CATALOG = Scope("registry", "catalog", frozenset({"*"}))


def parse_scope(text: str) -> Scope:
    type_part, sep, rest = text.partition(":")
    name, sep2, actions = rest.rpartition(":")
    type_match = _TYPE.fullmatch(type_part)
    if not (sep and sep2 and name and type_match):
        raise ScopeError(f"invalid scope {text[:200]!r}")
    action_set = frozenset(action for action in actions.split(",") if action)
    if not all(_ACTION.fullmatch(action) for action in action_set):
        raise ScopeError(f"invalid actions in scope {text[:200]!r}")
    return Scope(type_match[1], name, action_set)


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """Every scope in `values`, each of which may list several separated by spaces."""
    return [parse_scope(part) for value in values for part in value.split()]


def merge(scopes: Iterable[Scope]) -> list[Scope]:
    """One scope per resource, with the union of its actions, in first-seen order."""
    merged: dict[tuple[str, str], set[str]] = {}
    for scope in scopes:
        merged.setdefault((scope.type, scope.name), set()).update(scope.actions)
    return [Scope(kind, name, frozenset(actions)) for (kind, name), actions in merged.items()]
