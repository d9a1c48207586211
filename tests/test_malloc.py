import platform

import pytest

from registry.malloc import return_big_buffers_to_the_system


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="only glibc has the threshold")
def test_mmap_threshold_is_fixed_on_glibc() -> None:
    assert return_big_buffers_to_the_system()
