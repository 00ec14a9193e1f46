"""Keeping the task cluster's workers small: what they all import is loaded once, before they are forked,
and memory is given back to the operating system after a burst of native allocations.

django-q2 forks its workers from the cluster's process (the `fork` context). A module imported there first
is shared by every worker, copy-on-write; imported by the tasks themselves (they import lazily), it is
loaded again by each worker on its first task of that kind — PyAV alone is ~19 MB — so the cluster's
memory would grow until every worker had run every kind of task. `preload_worker_modules` imports them
in the cluster's process instead (genhub's AppConfig calls it for `qcluster`).

A fal pump downloads and decodes clips on a few threads (PyAV, FFmpeg frame buffers): glibc keeps what
they freed in its heaps for reuse, so the worker that ran the pump stays at its high-water mark until
it is recycled. django-q hands each pump task to whichever worker is free, so one after another the
workers would each keep such a mark. `malloc_trim` returns the free pages at the tops and in the middle
of glibc's heaps; it costs a few milliseconds, and is only worth calling after such a burst.
"""

import ctypes
import ctypes.util
import functools
import importlib

from django.conf import settings
from django.utils.module_loading import import_string

# The modules behind every task genhub enqueues (jobs/tasks.py and gpu_instances/tasks.py import them
# inside the task functions) and, through them, PyAV, Pillow, the HTTP and WebSocket clients.
WORKER_MODULES = (
    "jobs.dispatch", "jobs.worker_run", "jobs.fetching", "jobs.alerts", "jobs.resume", "jobs.batch_events",
    "jobs.exports", "gpu_instances.orchestrator", "gpu_instances.provider", "providers.fal", "providers.vastai",
)


def preload_worker_modules() -> None:
    """Imports what the workers will run, and the configured storage backend (boto3 for S3), without
    creating anything: no connection or client is made before the fork."""
    for name in WORKER_MODULES:
        importlib.import_module(name)
    import_string(settings.STORAGES["default"]["BACKEND"])


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
