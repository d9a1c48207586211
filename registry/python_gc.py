"""Python's cyclic garbage collector in a serving worker: what startup made is frozen.

A worker starts with ~60,000 objects that live as long as it (the modules, boto3's
service models, pydantic's validators, the app). Python promotes every object that
outlives two young collections into the oldest generation, and scans that whole
generation once promotions add up to a quarter of it. Under 64 concurrent requests the
objects of the requests in flight were promoted at such a pace that a worker ran a full
collection (~30 ms) every ~3,000 requests: 1 s of CPU in 100,000 manifest GETs, ~10% of
the worker's time (perf, bench/RESULTS.md). `gc.freeze()` once startup is done moves
those objects into a permanent generation that no collection scans; newer objects are
collected as ever, and a full collection scans only what came after startup.

Young collections come after 10,000 new objects rather than 700: each scans what the
requests in flight hold, so fewer of them cost less. Measured A/B on 2 workers, 64
connections: HEAD blob +8-11% (CPU a request -11%), manifest GET +2-7%, tag list -3-5%
(not explained; it stays well above its target).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # new objects between young collections (Python's default: 700)


def freeze_startup_objects() -> None:
    """Collect what startup left over, freeze the rest, and space young collections out.
    Only for a process that serves until it exits: objects frozen are never collected,
    even once unreferenced in a cycle (an app of the tests' own, for one)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
