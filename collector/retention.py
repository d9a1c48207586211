"""Retention: which tags and manifests of a repository the `retention.policies` condemn.

The first rule whose `repositories` globs match a repository decides for it (later
rules are not consulted), so a narrow rule written before a broad one overrides it:

    - repositories: [ci/**]      # CI builds: only the last 5
      keep_last: 5
    - repositories: ["**"]       # everything else: a year
      keep_newer_than: 365d

Tags. A tag stays if any keep condition of its rule holds: it is among the
`keep_last` most recently pushed (written) tags; it matches a `keep_tags` pattern;
it was pushed within `keep_newer_than`; its manifest was pulled within
`keep_pulled_within` (a manifest never seen pulled counts as pulled when it was
pushed). A rule with no keep condition condemns no tag. Tags under an
`immutable_tags` rule always stay.

Manifests, only when the rule sets `untagged_after`. A manifest stays if a tag that
stays points at it, it was pushed within `untagged_after`, or (with
`keep_pulled_within`) it was pulled within that (a deployment pinned by digest);
and then so do the manifests it needs: the children of a kept index, the subject
of a kept referrer, the referrers (signatures, SBOMs) of a kept manifest. Every
other manifest is condemned, including those whose only tags are condemned in the
same run. Nothing pushed within `grace` is condemned.

Nothing is deleted here. The answer is in an order the collector can delete in:
tags first, then each manifest before the manifests it lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from collector.facts import ManifestFacts, RepositoryFacts, repository_facts
from collector.known_references import KnownReferences
from oci.globs import matches_any, tag_matches_any
from oci.references import Digest
from registry.config import ImmutableTagRule, RetentionRule, format_duration
from registry.immutable_tags import immutable_rule
from storage.store import Store


@dataclass(frozen=True, slots=True)
class Condemned:
    kind: Literal["tag", "manifest"]
    repository: str
    reference: str  # the tag, or the manifest digest as a string
    rule: str  # e.g. "retention.policies[0] (repositories: ci/**): keep_last 5"


async def condemned(
    store: Store,
    name: str,
    rules: Sequence[RetentionRule],
    now: float,
    *,
    grace: float = 0.0,
    immutable: Sequence[ImmutableTagRule] = (),
    known: KnownReferences | None = None,
) -> list[Condemned]:
    """What the first rule matching repository `name` condemns in it at time `now`.

    `grace` (`gc.grace`): nothing younger is condemned; `immutable`
    (`immutable_tags`): the tags they name are kept; `known`: the mark's cache of what
    manifests reference (collector/known_references.py).
    """
    first = next(((i, r) for i, r in enumerate(rules) if matches_any(r.repositories, name)), None)
    if first is None:
        return []
    index, rule = first
    keeps_tags = bool(_tag_conditions(rule))
    if not keeps_tags and rule.untagged_after is None:
        return []
    facts = await repository_facts(store, name, known)
    label = f"retention.policies[{index}] (repositories: {', '.join(rule.repositories)})"
    judge = _Judge(rule, now, grace)
    doomed_tags = judge.condemned_tags(facts, name, immutable) if keeps_tags else []
    reason = f"{label}: {_tag_conditions(rule)}"
    found = [Condemned("tag", name, tag, reason) for tag in doomed_tags]
    if rule.untagged_after is not None:
        reason = f"{label}: untagged_after {format_duration(rule.untagged_after)}"
        for digest in judge.condemned_manifests(facts, set(doomed_tags)):
            found.append(Condemned("manifest", name, str(digest), reason))
    return found


def _tag_conditions(rule: RetentionRule) -> str:
    """The rule's keep conditions, all of which a condemned tag fails."""
    parts = []
    if rule.keep_last is not None:
        parts.append(f"keep_last {rule.keep_last}")
    if rule.keep_tags:
        parts.append(f"keep_tags {', '.join(rule.keep_tags)}")
    if rule.keep_newer_than is not None:
        parts.append(f"keep_newer_than {format_duration(rule.keep_newer_than)}")
    if rule.keep_pulled_within is not None:
        parts.append(f"keep_pulled_within {format_duration(rule.keep_pulled_within)}")
    return "; ".join(parts)


class _Judge:
    def __init__(self, rule: RetentionRule, now: float, grace: float) -> None:
        self._rule = rule
        self._now = now
        self._grace = grace

    def _within(self, time: float, duration: float | None) -> bool:
        return duration is not None and self._now - time < duration

    def _pulled_within(self, manifest: ManifestFacts) -> bool:
        pulled = manifest.pushed if manifest.pulled is None else manifest.pulled
        return self._within(pulled, self._rule.keep_pulled_within)

    def condemned_tags(
        self, facts: RepositoryFacts, name: str, immutable: Sequence[ImmutableTagRule]
    ) -> list[str]:
        rule = self._rule
        # Ties (S3 times are whole seconds) are broken by name, the same in every run.
        newest_first = sorted(facts.tags, key=lambda t: (-t.pushed, t.tag))
        doomed = []
        for rank, tag in enumerate(newest_first):
            kept = (
                (rule.keep_last is not None and rank < rule.keep_last)
                or tag_matches_any(rule.keep_tags, tag.tag)
                or self._within(tag.pushed, rule.keep_newer_than)
                or self._pulled_within(facts.manifests[tag.digest])
                or self._within(tag.pushed, self._grace)
                or immutable_rule(immutable, name, tag.tag) is not None
            )
            if not kept:
                doomed.append(tag.tag)
        return sorted(doomed)

    def condemned_manifests(self, facts: RepositoryFacts, doomed_tags: set[str]) -> list[Digest]:
        manifests = facts.manifests
        roots = {t.digest for t in facts.tags if t.tag not in doomed_tags}
        roots.update(
            m.digest
            for m in manifests.values()
            if self._within(m.pushed, self._rule.untagged_after)
            or self._within(m.pushed, self._grace)
            or (self._rule.keep_pulled_within is not None and self._pulled_within(m))
        )
        kept = _reachable(roots, manifests)
        return _parents_first(set(manifests) - kept, manifests)


def _reachable(roots: Iterable[Digest], manifests: dict[Digest, ManifestFacts]) -> set[Digest]:
    """`roots` and every manifest they need: children, subjects and referrers."""
    referrers: dict[Digest, list[Digest]] = {}
    for manifest in manifests.values():
        if manifest.subject is not None:
            referrers.setdefault(manifest.subject, []).append(manifest.digest)
    kept: set[Digest] = set()
    pending = [digest for digest in roots if digest in manifests]
    while pending:
        digest = pending.pop()
        if digest in kept:
            continue
        kept.add(digest)
        manifest = manifests[digest]
        linked = [*manifest.references, *referrers.get(digest, ())]
        if manifest.subject is not None:
            linked.append(manifest.subject)
        pending.extend(d for d in linked if d in manifests and d not in kept)
    return kept


def _parents_first(doomed: set[Digest], manifests: dict[Digest, ManifestFacts]) -> list[Digest]:
    """`doomed` ordered so that an index comes before the manifests it lists."""
    ordered: list[Digest] = []
    visited: set[Digest] = set()

    def visit(digest: Digest) -> None:  # depth: at most index -> manifest -> ... (a few)
        visited.add(digest)
        for child in sorted(manifests[digest].references, key=str):
            if child in doomed and child not in visited:
                visit(child)
        ordered.append(digest)

    for digest in sorted(doomed, key=str):
        if digest not in visited:
            visit(digest)
    return ordered[::-1]
