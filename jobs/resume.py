"""Picking the work up again when a task cluster (re)starts, instead of waiting for the minute schedule.

A cluster that was SIGKILLed leaves its leases held (they lapse within GENHUB_LEASE_SECONDS), its jobs
running with no one beating for them (the sweep requeues them after GENHUB_STALE_JOB_SECONDS) and its
in-flight tasks locked in the queue for `Q_RETRY` (an hour). When a worker of the new cluster starts,
one resume task is enqueued: it sweeps what is already stale and starts a pump per provider and a
reconcile that take over a dead holder's lease as soon as it lapses. The vastai pump keeps sweeping
every pass, so jobs whose beats stop later are found within seconds too.
"""

import logging
import os

from django.db import DatabaseError

from genhub.leases import lease_acquire, lease_term

log = logging.getLogger(__name__)
# One resume per cluster start and this many seconds, however many workers spawn (six at start, one per recycle).
RESUME_EVERY_SECONDS = 10.0


def on_worker_spawn(sender=None, proc_name: str = "", **kwargs) -> None:
    """django-q2's `post_spawn`, in every new worker process."""
    try:
        # A lease that is never released: the first worker of this cluster (keyed by the sentinel, the
        # workers' parent) to take it in a 10 s window enqueues the resume.
        if lease_acquire(name=f"cluster:resume:{os.getppid()}", seconds=RESUME_EVERY_SECONDS):
            from jobs.tasks import resume as resume_task

            resume_task.enqueue()
    except DatabaseError:
        log.exception("could not enqueue the resume task at worker start; the schedule will do it")


def cluster_resume() -> list[str]:
    from gpu_instances.tasks import reconcile as reconcile_task
    from jobs.fetching import fetch_restart
    from jobs.models import Job
    from jobs.services import jobs_sweep_stale
    from jobs.tasks import pump as pump_task
    from providers.registry import provider_names

    jobs_sweep_stale()
    wait = lease_term() + 1
    started = [name for name in provider_names()
               if Job.objects.filter(provider=name, status__in=Job.UNFINISHED).exists()]
    for name in started:
        pump_task.enqueue(name, wait)
    reconcile_task.enqueue(wait)
    if fetch_restart(wait=wait):
        started.append("fetch")
    return started
