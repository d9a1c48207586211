"""Where everything lives in a driver: the one place that builds storage keys.

    blobs/<alg>/<xx>/<hex>/data                              content, shared by all repositories
    blobs/<alg>/<xx>/<hex>/touched                           time the API last vouched for it
    blobs/<alg>/<xx>/<hex>/tomb-<run>                        a collector is deleting it
    catalog/<name with / as +>/repository                    marker: the repository exists
    repositories/<name>/_layers/<alg>/<hex>                  blob given to this repository (empty)
    repositories/<name>/_manifests/revisions/<alg>/<hex>/link  manifest in this repository (JSON)
    repositories/<name>/_manifests/tags/<tag>                tag -> manifest digest
    repositories/<name>/_manifests/pulled/<alg>/<hex>        empty; modified = manifest's last pull
    repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex>   descriptor of a referrer of a subject
    uploads/<id>/{data,info}                                 upload session (info: its repository)
    repositories/<name>/_summary                             usage numbers (storage.usage)
    repositories/<name>/_tags_changed                        new at every tag change (storage/)
    repositories/<name>/_summary_blobs                       its blobs' sizes (storage.usage)
    repositories/<name>/_proxy/checked/<tag>                 digest; modified: checked upstream
    quarantine/<alg>/<hex>                                   a corrupt blob moved aside (check)
    _maintenance                                             maintenance flag (JSON: message, since)
    _events/outbox/<segment>, _events/cursors/<endpoint>       event outbox (storage.outbox)
    _events/lease                                            the webhook deliverer now (registry/)
    _gc/lease                                                the collector running now (collector/)
    _gc/deletions                                            new at every deletion (storage/)
    _proxy/filling/<alg>/<hex>                               a blob being fetched upstream (proxy/)
    _ui/session-key                                          signs the web UI's cookies (ui/)
    _gc/last-run                                             the last run's record (collector/)

Callers pass names, tags and digests already validated by `oci.references`.
A tag is one object, not a folder: it exists exactly when its one atomic key does, so
no crash or full disk can leave a folder listed as a tag without a target (a writer's
temporary file is a dot-file, never listed, and tags never start with a dot).
"""

from __future__ import annotations

import re

from oci.references import Digest

_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


def is_upload_id(value: str) -> bool:
    return _UPLOAD_ID.fullmatch(value) is not None


def blob_data(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.encoded[:2]}/{digest.encoded}/data"


def blobs_dir() -> str:
    return "blobs"


def quarantined(digest: Digest) -> str:
    return f"quarantine/{digest.algorithm}/{digest.encoded}"


def blobs_of(algorithm: str) -> str:
    return f"blobs/{algorithm}"


def blob_fan_out(digest: Digest) -> str:
    """The folder of the digest's `blob_dir` and those of every digest with the same
    first two characters (the collector sweeps one such folder at a time)."""
    return f"blobs/{digest.algorithm}/{digest.encoded[:2]}"


def blob_dir(digest: Digest) -> str:
    return f"{blob_fan_out(digest)}/{digest.encoded}"


def blob_touched(digest: Digest) -> str:
    return f"{blob_dir(digest)}/touched"


def blob_tomb(digest: Digest, owner: str) -> str:
    """The tomb one collector (`owner`) puts on a blob it is about to delete."""
    return f"{blob_dir(digest)}/tomb-{owner}"


def is_tomb(entry: str) -> bool:
    """Whether an entry of `blob_dir` is a tomb (of any collector)."""
    return entry.startswith("tomb-")


def gc_lease() -> str:
    return "_gc/lease"


def deletions() -> str:
    return "_gc/deletions"


def gc_last_run() -> str:
    return "_gc/last-run"


def catalog_dir() -> str:
    return "catalog"


def catalog_entry(name: str) -> str:
    # A folder per repository: S3 lists folders as bare common prefixes, which cost a
    # third of what listing as many objects (each with its size, time and ETag) does.
    return f"catalog/{name.replace('/', '+')}"


def catalog_marker(name: str) -> str:
    return f"{catalog_entry(name)}/repository"


def name_from_catalog_entry(entry: str) -> str:
    """The repository of an entry of `catalog_dir()`."""
    return entry.replace("+", "/")


def repository(name: str) -> str:
    return f"repositories/{name}"


def layers_dir(name: str) -> str:
    return f"repositories/{name}/_layers"


def layer_link(name: str, digest: Digest) -> str:
    """A file, not a folder holding one: removing it frees no block (the collector
    removes one per unreferenced blob), and writing it makes no folder."""
    return f"repositories/{name}/_layers/{digest.algorithm}/{digest.encoded}"


def legacy_layer_link(name: str, digest: Digest) -> str:
    """Where versions before 2026-12 wrote `layer_link`: still read and removed."""
    return f"{layer_link(name, digest)}/link"


def revisions_dir(name: str, algorithm: str | None = None) -> str:
    """The revisions of a repository, or of one digest algorithm in it."""
    base = f"repositories/{name}/_manifests/revisions"
    return f"{base}/{algorithm}" if algorithm else base


def revision_link(name: str, digest: Digest) -> str:
    return f"repositories/{name}/_manifests/revisions/{digest.algorithm}/{digest.encoded}/link"


def pulled_marker(name: str, digest: Digest) -> str:
    return f"repositories/{name}/_manifests/pulled/{digest.algorithm}/{digest.encoded}"


def summary(name: str) -> str:
    return f"repositories/{name}/_summary"


def summary_blobs(name: str) -> str:
    return f"repositories/{name}/_summary_blobs"


def repository_content(name: str) -> tuple[str, ...]:
    """The folders whose objects are a repository's content: with none in them, the
    collector takes it out of the catalog."""
    return (layers_dir(name), revisions_dir(name), tags_dir(name), f"{repository(name)}/_referrers")


def repository_records(name: str) -> tuple[str, ...]:
    """What a repository keeps about its content (objects and folders): its usage summary,
    tag-change key, pull times and upstream checks. They go with its last content."""
    base = repository(name)
    return (
        summary(name),
        summary_blobs(name),
        tags_changed(name),
        f"{base}/_manifests/pulled",
        f"{base}/_proxy",
    )


def tags_dir(name: str) -> str:
    return f"repositories/{name}/_manifests/tags"


def tags_changed(name: str) -> str:
    return f"repositories/{name}/_tags_changed"


def tag_link(name: str, tag: str) -> str:
    return f"repositories/{name}/_manifests/tags/{tag}"


def proxy_checked(name: str, tag: str) -> str:
    """When a pull-through cache last confirmed the tag with its upstream (proxy/)."""
    return f"repositories/{name}/_proxy/checked/{tag}"


def proxy_filling(digest: Digest) -> str:
    """The lease of the process fetching a blob from an upstream (proxy/): the others
    wait for it rather than fetch the blob too."""
    return f"_proxy/filling/{digest.algorithm}/{digest.encoded}"


def referrers_dir(name: str, subject: Digest) -> str:
    return f"repositories/{name}/_referrers/{subject.algorithm}/{subject.encoded}"


def referrer_entry(name: str, subject: Digest, referrer: Digest) -> str:
    return f"{referrers_dir(name, subject)}/{referrer.algorithm}-{referrer.encoded}"


def uploads_dir() -> str:
    return "uploads"


def upload_dir(upload_id: str) -> str:
    return f"uploads/{upload_id}"


def upload_data(upload_id: str) -> str:
    return f"uploads/{upload_id}/data"


def upload_info(upload_id: str) -> str:
    return f"uploads/{upload_id}/info"


def health_probe() -> str:
    """A small object readiness checks write and read back (any replica, any time)."""
    return "health/probe"


def maintenance_flag() -> str:
    return "_maintenance"


def outbox_dir() -> str:
    return "_events/outbox"


def outbox_segment(name: str) -> str:
    return f"_events/outbox/{name}"


def outbox_cursor(endpoint: str) -> str:
    return f"_events/cursors/{endpoint}"


def events_lease() -> str:
    return "_events/lease"


def ui_session_key() -> str:
    return "_ui/session-key"
