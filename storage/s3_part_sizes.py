"""How big each part of an S3 writer is: `part_size` at first, growing as a blob grows.

S3 allows 10,000 parts per multipart upload, each up to 5 GiB, and objects up to
5 TiB. A fixed part size caps a blob at 10,000 parts (97.7 GiB at 10 MiB: the limit
distribution hits, distribution#4572); a part size big enough for 5 TiB from the
first byte would hold 500 MiB per upload in memory. The size of a writer's part is
not known up front, so it follows a schedule: part n is `base * 2**((n - 1) //
PARTS_PER_STEP)`, capped at `MAX_PART_SIZE`. With the default 500 parts a step, the
first 5 GiB go in `base`-sized parts (10 MiB by default) and every base of at least
the 5 MiB minimum reaches the 5 TiB object limit well within 10,000 parts.

Parts bigger than `base` never take a slot of the in-memory budget (whose slots are
`base` bytes): they fill a temporary file (`S3Driver.part_buffer`).
"""

from __future__ import annotations

MIN_PART_SIZE = 5 << 20
MAX_PART_SIZE = 5 << 30
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 << 40
PARTS_PER_STEP = 500


def part_size(number: int, base: int, per_step: int = PARTS_PER_STEP) -> int:
    """The size of part `number` (from 1) of a writer whose first parts are `base` bytes."""
    return min(base << ((number - 1) // per_step), MAX_PART_SIZE)
