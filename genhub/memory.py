"""Giving memory back to the operating system after a burst of native allocations.

A fal pump downloads and decodes clips on a few threads (PyAV, FFmpeg frame buffers): glibc keeps what
they freed in its heaps for reuse, so the worker that ran the pump stays at its high-water mark until
it is recycled. django-q hands each pump task to whichever worker is free, so one after another the
workers would each keep such a mark. `malloc_trim` returns the free pages at the tops and in the middle
of glibc's heaps; it costs a few milliseconds, and is only worth calling after such a burst.
"""

import ctypes
import ctypes.util
import functools


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_freed_memory() -> bool:
    """Returns freed heap memory to the OS where the C library can (glibc); → whether it could."""
    libc = _libc()
    if libc is None:  # musl, macOS: nothing to call, nothing kept the same way
        return False
    libc.malloc_trim(0)
    return True
