"""The growing part-size schedule: a blob up to S3's 5 TiB object limit fits in 10,000
parts whatever `storage.s3.part_size` is, and no part breaks S3's size rules."""

from __future__ import annotations

import pytest

from storage.s3_part_sizes import (
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    part_size,
)

GiB = 1 << 30


@pytest.mark.parametrize("base", [MIN_PART_SIZE, 10 << 20, 64 << 20, MAX_PART_SIZE])
def test_the_object_limit_fits_in_the_part_limit(base: int) -> None:
    sizes = [part_size(n, base) for n in range(1, MAX_PARTS + 1)]
    assert all(MIN_PART_SIZE <= size <= MAX_PART_SIZE for size in sizes)
    # MAX_PARTS - 1 full parts and a last one (the tail) hold the largest object.
    assert sum(sizes) >= MAX_OBJECT_SIZE
    assert sizes == sorted(sizes)


def test_the_default_part_size_holds_the_first_gigabytes_and_passes_distribution_limit() -> None:
    base = 10 << 20
    assert {part_size(n, base) for n in range(1, 501)} == {base}  # first 5 GiB unchanged
    full_parts_for_100_gib = 0
    stored = 0
    while stored < 100 * GiB:
        full_parts_for_100_gib += 1
        stored += part_size(full_parts_for_100_gib, base)
    assert full_parts_for_100_gib < 2500  # a fixed 10 MiB part would need 10,240
