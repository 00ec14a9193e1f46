"""Which process holds something, and whether that process is certainly gone.

Leases and running jobs name the process that holds them. A holder that died (SIGKILL, the OOM
killer, a crashed worker) is otherwise recognised only when its beats stop: a lease lapses after
GENHUB_LEASE_SECONDS, a job goes stale after GENHUB_STALE_JOB_SECONDS. A process on the same machine
can tell at once, from /proc, that a holder is gone; the work then resumes in the time a cluster
takes to start rather than after a lease term.

The identity is `<boot id>/<pid namespace>/<pid>/<start time>`: the kernel's random boot id tells
machines (and reboots) apart, the pid namespace tells containers on one kernel apart (their pids
overlap), and the start time in clock ticks since boot tells a pid reused by a new process from the
old one. `is_gone` answers True only when every part but the pid matches this process's own, so
the holder's /proc entry would be visible here, and that entry is missing, a zombie, or a different
process. Anywhere else (another machine, another container, no /proc) it answers False and the
beats decide, as before: a live holder is never taken for dead.
"""

import os
from functools import lru_cache
from pathlib import Path

PROC = Path("/proc")


@lru_cache(maxsize=1)
def _namespace() -> str:
    """`<boot id>/<pid namespace>` of this kernel and container, '' where /proc cannot tell."""
    try:
        boot = (PROC / "sys/kernel/random/boot_id").read_text().strip()
        pidns = os.readlink(PROC / "self/ns/pid")  # e.g. "pid:[4026531836]"
    except OSError:
        return ""
    return f"{boot}/{pidns}" if boot and pidns else ""


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process from /proc/<pid>/stat, None when there is no such process."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses itself.
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], fields[19]  # fields 3 and 22 of proc(5)


def this_process() -> str:
    """This process's identity, '' where /proc is not available (then nothing is judged from it)."""
    namespace = _namespace()
    pid = os.getpid()  # not cached: a forked worker is a process of its own
    stat = _stat(pid) if namespace else None
    return f"{namespace}/{pid}/{stat[1]}" if stat else ""


def is_gone(identity: str) -> bool:
    """True only when `identity` names a process of this machine and container that no longer runs."""
    parts = (identity or "").split("/")
    if len(parts) != 4 or not _namespace() or "/".join(parts[:2]) != _namespace():
        return False
    pid, started = parts[2], parts[3]
    if not pid.isdigit():
        return False
    stat = _stat(int(pid))
    return stat is None or stat[0] in ("Z", "X") or stat[1] != started
