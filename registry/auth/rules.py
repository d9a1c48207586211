"""Permissions: which actions a caller may take on a repository, from the `auth` config.

Patterns are globs over repository names (`oci.globs`: `*` within one path
component, `**` across components), where `{user}` stands for the caller's name.
Admins may do everything; `anonymous_pull` patterns may be pulled by anyone;
`user_namespaces` gives every user everything below `{user}/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from oci.globs import matches_any
from registry.auth.scopes import CATALOG, Scope
from registry.config import AuthConfig

ALL_ACTIONS = frozenset({"pull", "push", "delete"})
NOTHING: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Rule:
    patterns: tuple[str, ...]
    actions: frozenset[str]
    users: frozenset[str]

    def applies_to(self, user: str | None) -> bool:
        return user is not None and ("*" in self.users or user in self.users)


class Rules:
    def __init__(self, config: AuthConfig) -> None:
        self.admins = frozenset(config.admins)
        rules = []
        for rule in config.rules:
            users = set(rule.users)
            for group in rule.groups:
                users.update(config.groups.get(group, ()))
            rules.append(_Rule(tuple(rule.repositories), frozenset(rule.actions), frozenset(users)))
        if config.user_namespaces:
            rules.append(_Rule(("{user}/**",), ALL_ACTIONS, frozenset({"*"})))
        self._rules = tuple(rules)
        self._anonymous = tuple(config.anonymous_pull)
        # Decisions depend only on (user, repository): remember the recent ones.
        self.actions = lru_cache(maxsize=4096)(self._actions)

    def _actions(self, user: str | None, repository: str) -> frozenset[str]:
        """Every action `user` (None: anonymous) may take on `repository`."""
        if user is not None and user in self.admins:
            return ALL_ACTIONS
        allowed: set[str] = set()
        if _matches(self._anonymous, None, repository):
            allowed.add("pull")
        for rule in self._rules:
            if rule.applies_to(user) and _matches(rule.patterns, user, repository):
                allowed |= rule.actions
        return frozenset(allowed)

    def permitted(self, user: str | None, scope: Scope) -> frozenset[str]:
        """The actions of `scope`'s resource `user` may take; `*` stands for all."""
        if scope.type == "repository":
            return self.actions(user, scope.name)
        if (scope.type, scope.name) == (CATALOG.type, CATALOG.name) and user is not None:
            # Any signed-in user may list; the listing shows only what they may pull.
            return CATALOG.actions
        return NOTHING

    def grant(self, user: str | None, requested: Scope) -> Scope:
        """`requested` narrowed to what `user` may do (possibly no action at all)."""
        permitted = self.permitted(user, requested)
        if "*" in requested.actions:
            return Scope(requested.type, requested.name, permitted)
        if "*" in permitted:
            return requested
        return Scope(requested.type, requested.name, requested.actions & permitted)

    def allows(self, user: str | None, scope: Scope) -> bool:
        return self.grant(user, scope).actions == scope.actions


def _matches(patterns: tuple[str, ...], user: str | None, repository: str) -> bool:
    """Whether a pattern matches; one naming `{user}` matches nothing without a user."""
    if user is None:
        patterns = tuple(pattern for pattern in patterns if "{user}" not in pattern)
    else:  # case-exact: `ALICE` owns no `alice`
        patterns = tuple(pattern.replace("{user}", user) for pattern in patterns)
    return matches_any(patterns, repository)
