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
    log.info("memory after release: %s", report(store))


M_ARENA_MAX = -8  # glibc's mallopt parameter


def cap_arenas(arenas: int = 2) -> None:
    """At most ``arenas`` glibc malloc arenas for the process, instead of eight a core: the server's threads
    (requests, the scheduler's jobs, deliveries) each allocating in an arena of its own leave freed memory
    spread over all of them, which a trim returns only in part (MALLOC_ARENA_MAX=2, as long-running Python
    servers set). Takes effect for arenas not yet created: call it before threads start."""
    lib = _libc()
    if lib is not None and hasattr(lib, "mallopt"):
        lib.mallopt(M_ARENA_MAX, arenas)


def _rss_mib() -> float | None:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))
    except (OSError, StopIteration):
        return None


def report(store=None) -> str:
    """Where the process's memory is, for the log after a release: resident, the embedded engine's tracked
    memory, and the Python objects alive."""
    parts = [f"resident {_rss_mib() or 0:.0f} MiB"]
    if store is not None and store.embedded:
        try:
            tracked = store.scalar("SELECT value FROM system.metrics WHERE metric = 'MemoryTracking'") or 0
            parts.append(f"engine tracked {tracked / 2**20:.0f} MiB")
        except Exception as exc:  # a report never fails the work it follows
            log.debug("no engine memory figures: %s", exc)
    parts.append(f"{len(gc.get_objects()):,} Python objects")
    return ", ".join(parts)
