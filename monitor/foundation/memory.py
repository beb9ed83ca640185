"""Giving freed memory back to the operating system after large work.

glibc keeps the heap that pandas, Evidently and the embedding batches freed, so a
process that once computed two weeks of demo drift stays that large for good
(measured: a 14-day demo load left 2,022 MiB resident; after a collection and
``malloc_trim`` 1,709 MiB). Elsewhere than glibc this only collects.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return lib if lib is not None and hasattr(lib, "malloc_trim") else None


def release_free_memory() -> None:
    gc.collect()
    lib = _libc()
    if lib is not None:
        lib.malloc_trim(0)
