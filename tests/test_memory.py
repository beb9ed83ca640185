"""release_free_memory gives a fragmented heap back: what the scheduler calls after heavy jobs and the demo after
its load (measured on a 14-day demo: 2,022 MiB resident, 1,709 MiB after)."""
from __future__ import annotations

import gc

import pytest

from monitor.foundation.memory import release_free_memory


def _rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.fast
def test_freed_heap_in_the_middle_goes_back_to_the_system():
    blocks = [bytearray(1000) for _ in range(300_000)]  # about 300 MB through malloc, not Python's arenas
    keep = blocks[::64]  # a live block every 64 KB: the heap cannot shrink from its top alone
    del blocks
    gc.collect()
    before = _rss_mib()
    release_free_memory()
    after = _rss_mib()
    assert before - after > 100, (before, after)
    assert len(keep) == 4688


def test_the_embedded_engine_purges_its_allocator(make_config, make_store):
    """release_free_memory(store) has chDB's jemalloc return its freed pages: the statement is accepted (an
    engine that refused it would keep them, silently, because the release never fails)."""
    store = make_store(make_config())
    store.command("SYSTEM JEMALLOC PURGE")
    release_free_memory(store)
