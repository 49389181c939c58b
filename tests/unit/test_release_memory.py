"""The daemon gives memory a large reconcile freed back to the system when it is idle (daemon/service.py)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import os
    from reconciler.daemon.service import release_memory

    def resident():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    kept, freed = [], []
    for i in range(3000):  # ~190 MB in 64 KB blocks, each followed by a small block that stays
        freed.append(bytearray(64 * 1024))
        kept.append(bytearray(600))
    del freed  # free, but in holes of the heap that free() does not hand back
    held = resident()
    returned = release_memory()
    print(held, resident(), returned)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and /proc are Linux's")
def test_freed_memory_in_the_heaps_holes_goes_back_to_the_system():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout
    held, after, returned = (int(x) if x != "None" else None for x in out.split())
    if returned is None:
        pytest.skip("no glibc here (musl?): malloc_trim is not there to call")
    mb = 2 ** 20
    assert held - after > 150 * mb, (held / mb, after / mb)  # most of the ~190 MB freed
    assert returned == pytest.approx(held - after, abs=16 * mb)
