"""The online garbage collector: safe beside any number of servers and replicas.

Design note (issue 11). No database, no process's memory: everything below is stored.
Tests: tests/collector/ (each names the step it checks), tests/e2e/test_gc_*.py.

Vocabulary. The *live set* is every digest a manifest revision of any repository
references (mark.py: the manifest itself and every `digest` in its document: config,
layers, index children, subject). A run reads them from the manifest's bytes, or from
what an earlier run on the machine read from the same bytes (known_references.py, a
local cache keyed by digest, whose loss only costs the reads it spared). A blob's
*touch* (`blobs/<alg>/<xx>/<hex>/touched`) is written by the API whenever it vouches
for the blob (BlobStore.vouch): blob HEAD and GET 200, mount 201, upload 201, each blob
and child a manifest PUT checks, and the manifest's own bytes. A *tomb*
(`.../tomb-<run>`) is written by a collector run before it deletes the blob's data or
any repository's link to it. Times are the storage's.

Step 1, the handshake (sweep.py; tests/collector/test_handshake.py forces the API's
requests between the collector's steps). The API, before answering that B exists:
W(touch_B), then R(tombs of B) (one: answer B is missing, or fail the upload or
manifest PUT with a retryable error), then R(link/data of B) from storage, never from
a cache. A collector, for a candidate B: W(its tomb), then R(touch_B) (touched since
the cutoff: spare B), then delete, then remove its tomb. Storage is linearizable per
key and a read (or listing) started after a write completed sees it. If the API's
R(tombs) found none, the collector's W(tomb) completed after that read began, so
after the API's W(touch) completed, so the collector's R(touch) sees the touch and
spares B. If the collector deleted B before removing its tomb, the API either saw the
tomb, or read after the deletion and answers "missing". Each run removes only its own
tombs (and, after `stale_tomb_after` and holding the lease, ones a dead run left, as
the API does too: step 6), so this holds for any number of collectors at once; the
lease (step 5) is there to not do the work twice. One tomb covers B's data and every
repository's link to B (step 4), and a sweep batch's touches are read back, after its
tombs are written, by one listing of their fan-out folder (the filesystem: a stat of
each candidate's touch), not a read each.

Tombs need only be visible, not durable (driver `put_markers`: on the filesystem an
empty file created without fsync, a batch's tombs hard links to one, so they carry the
time it was created, just before them: what step 6 compares with `stale_tomb_after`).
Every reader reads a tomb by its name; the argument above reads them only while the
collector that wrote them is running: every reader sees a file the kernel created,
whichever process reads. A crash of the machine that loses an unsynced tomb also ends
every request that could have read it and the collector that would delete under it;
what it leaves is what any crash leaves (step 6). (Touches, links and data keep their
fsync: those must survive.)

Step 2, the cutoffs (run.py; test_collect.py, test_nothing_younger_than_the_grace_goes).
A run takes `now` from the storage's clock (the time of the lease it just wrote); it
deletes a blob or link only if the data or link was written before `now - grace` and
the touch before `now - grace - grace/10` (a server may skip re-touching a blob it
touched less than grace/10 ago). So nothing younger than `gc.grace`, and nothing
vouched for within it, is deleted.

Step 3, manifests (test_handshake.py, test_a_manifest_pushed_after_the_mark_...). A
manifest PUT vouches for every blob and child it references and for its own bytes
before writing its revision, and answers 201 only after. A run whose mark of that
repository began after the revision write marks them live; a run whose mark began
before it sweeps later and, by step 1, spares every vouched blob (its touch is younger
than the run's cutoff unless the PUT stalled between its checks and its write for
longer than the grace). So a stored manifest that got 201 never references a deleted
blob; a race costs at most a PUT answered MANIFEST_BLOB_UNKNOWN or 503, and the
client's next push uploads again.

Step 4, links and repositories (test_collect.py, test_a_link_the_repository_... and
test_an_emptied_repository_...; test_handshake.py, test_a_mount_before_the_tomb_...,
test_a_link_under_its_blobs_tomb_..., test_a_push_into_a_repository_being_uncataloged_...
and _being_emptied_...). A repository's link to a blob it no longer references goes
by the same handshake (the link is what HEAD and mount read): the mark queues it, and
the sweep takes it with its blob's fan-out folder, under the blob's one tomb, deleting
it in the same batch as the blob's data when that goes too. An emptied repository
leaves the catalog (after the sweep removed its last links): the collector deletes
its records (usage summary, tag-change key, pull times, upstream checks), then the
marker, then looks for content and puts the marker back if a push raced it (and
rewrites the summary the push may have lost); writers store content first and the
marker after (Catalog), so a repository with content always ends up listed.

Step 5, one collector (storage/lease.py; test_lease.py; tests/e2e/test_gc_stress.py,
test_two_replicas_...: runs of two replicas never overlap). A lease object taken and renewed by
conditional writes (driver `create` / `replace`), renewed before every batch of
deletions; a collector that lost it stops before deleting more.

Step 6, crashes (test_lease.py, test_a_tomb_left_by_a_killed_collector_... and
test_a_run_killed_between_a_repositorys_records_...; tests/e2e/test_gc_stress.py kills
`dockyard gc` with -9 stopped at a step of its sweep). Every step is idempotent. A
stopped run (cancelled: a server stopping its collector, Ctrl-C) first finishes the
folder it holds tombs in (sweep.py; test_a_run_stopped_while_it_holds_...), so only a
kill leaves tombs. A killed run leaves its tombs (the API answers those blobs missing,
and uploads of them fail retryably, until they are `stale_tomb_after` old: then the
first request that meets one removes it, holding the lease as a run would,
storage/stale_tombs.py and test_a_tomb_a_killed_collector_left_is_removed_...; the next
run deletes what is still unreferenced), links without data (the API checks the data
too), or a listed repository holding nothing, some of its records deleted (the next run
empties it), or a removed catalog marker of one that had nothing left.

Cost: the mark keeps the live set as strings (16 MB measured for 100,000 digests),
the queued links (repository names are shared strings) and each repository's kept
links and manifests (interned: the live set's strings); the sweep lists one fan-out
folder (`blobs/<alg>/<xx>`) at a time in one listing (S3: ListObjects pages, not a
request per blob), then, after its tombs, the candidates' touches again (S3: the
folder's listing; the filesystem: a stat each), writes one tomb per candidate blob and
deletes in batches (S3 DeleteObjects, 1,000 keys; the filesystem unlinks in 2 to 4
helper processes, whose waits on the disk overlap without the interpreter lock's
hand-overs that threads pay), each tomb after what it covers (`delete_then`: on the
filesystem blob after blob, no process waiting for another's; each emptied folder is
removed once). A blob link is one empty object, `_layers/<alg>/<hex>` (on a disk one
unlink frees it: a folder per link cost an rmdir, and a block freed and discarded, per
unreferenced blob; links older versions wrote, `<hex>/link`, are listed and removed
too), listed with one `scan`; revisions by `scan_leaves` (the filesystem stats each
`<alg>/<hex>/link` rather than open its folder). It works on the driver's
`bulk_concurrency` of repositories or folders at once: 8 on S3 (each waits on the
network), 2 on the filesystem (its calls are Python in threads: two overlap their system
calls, more only fight for the GIL). A repository the run changed gets its usage
summary rewritten after the sweep from the sizes it recorded (a digest's size never
changes), not by a stat per blob, and from the links
and manifests its mark left, not a listing of them before the write (the listing after
it checks them), and not fsynced (`put_visible`: an unreadable summary is recomputed
from the facts). A server runs its collections in a child process at the lowest CPU
priority (collector/niced.py), so serving keeps the CPU, and paced (collector/pacing.py):
it works at most `gc.background_share` of the time, resting between steps (never inside
one: a rest only makes the run longer; it renews its lease before each batch). The API
pays per vouched blob: a touch write (at most every grace/10 per process), a listing of
the blob's folder and a fresh stat.
"""
