"""Giving freed memory back to the operating system after large work.

glibc keeps the heap that pandas, Evidently and the jobs' reads freed, and the embedded
engine's allocator (jemalloc) keeps the pages its queries and merges freed, so a process
that once computed two weeks of demo drift stays that large for good (measured on a 4-day
demo with the model in its worker: 952 MiB resident when done; 909 after jemalloc's purge,
749 after ``malloc_trim``). Elsewhere than glibc the heap is only collected.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging

log = logging.getLogger(__name__)


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return lib if lib is not None and hasattr(lib, "malloc_trim") else None


def release_free_memory(store=None) -> None:
    """Collect, trim glibc's heap and, for an embedded ``store``, have its engine return its freed pages."""
    gc.collect()
    lib = _libc()
    if lib is not None:
        lib.malloc_trim(0)
    if store is not None and store.embedded:
        try:
            store.command("SYSTEM JEMALLOC PURGE")
        except Exception as exc:  # an engine built without jemalloc keeps its pages; nothing depends on it
            log.debug("the embedded engine did not purge its allocator: %s", exc)
