"""`immutable_tags`: tags that, once pushed, never move to another manifest and are
never deleted. Pushing the same manifest again is allowed (clients retry pushes).

The check reads the tag before the write, for a clear answer naming the rule; two
pushes of different manifests to a new immutable tag at the same instant can both pass
it, so the store then writes such a tag only if it is absent (a conditional create, as
the leases'): one push wins, the other is denied (`storage.manifests`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from oci.errors import ErrorCode, RegistryError
from oci.globs import matches_any, tag_matches_any
from oci.references import Digest
from registry.config import ImmutableTagRule
from storage.store import Store


def immutable_rule(rules: Sequence[ImmutableTagRule], name: str, tag: str) -> str | None:
    """The first rule making `tag` of repository `name` immutable, as the config names it."""
    for index, rule in enumerate(rules):
        if matches_any(rule.repositories, name) and tag_matches_any(rule.tags, tag):
            return (
                f"immutable_tags[{index}] (repositories: {', '.join(rule.repositories)}; "
                f"tags: {', '.join(rule.tags)})"
            )
    return None


def _denied(name: str, tag: str, rule: str, what: str) -> RegistryError:
    return RegistryError(
        ErrorCode.DENIED,
        f"tag {tag} of {name} is immutable by {rule}: {what}",
        detail={"tag": tag},
    )


async def check_push(
    rules: Sequence[ImmutableTagRule], store: Store, name: str, tags: Iterable[str], digest: Digest
) -> set[str]:
    """Refuse to point an existing immutable tag at another manifest; returns the
    immutable ones among `tags`, for the store to create only where absent."""
    immutable = set()
    for tag in tags:
        rule = immutable_rule(rules, name, tag)
        if rule is None:
            continue
        immutable.add(tag)
        current = await store.manifests.resolve(name, tag)
        if current is not None and current != digest:
            raise _denied(name, tag, rule, f"it points at {current}, it cannot be moved")
    return immutable


async def check_untag(rules: Sequence[ImmutableTagRule], store: Store, name: str, tag: str) -> None:
    """Refuse to delete an existing immutable tag (a missing one is left to answer 404)."""
    rule = immutable_rule(rules, name, tag)
    if rule is not None and await store.manifests.resolve(name, tag) is not None:
        raise _denied(name, tag, rule, "it cannot be deleted")


async def check_delete(
    rules: Sequence[ImmutableTagRule], store: Store, name: str, digest: Digest
) -> None:
    """Refuse to delete a manifest that an immutable tag points at (the tag would go)."""
    if not rules:
        return
    for tag in await store.manifests.tags(name):
        rule = immutable_rule(rules, name, tag)
        if rule is not None and await store.manifests.resolve(name, tag) == digest:
            raise _denied(name, tag, rule, f"manifest {digest} cannot be deleted")
