"""The pumps: one loop per provider moves queued jobs to it and follows them to the end.

A pump runs inside one django-q2 task under a lease (so at most one per provider), makes passes
for up to GENHUB_PUMP_SECONDS and hands over to a fresh task while work remains. Two shapes:

- polled providers (fal): each pass is `polled_pump.polled_pass`, which submits, polls and collects
  from this one loop.
- blocking providers (vastai): the pump claims up to the in-flight limit and hands each job to
  a `run_job` task that streams the generation (`worker_run`); with no GPU ready, jobs wait in
  `waiting_for_gpu` and no worker blocks.
"""

import logging
import time
import uuid

from django.conf import settings

from genhub.db import DatabaseError, reconnect, with_reconnect
from genhub.leases import HeldLease
from genhub.memory import release_freed_memory
from jobs import batch_events, budget, pending_results, polled_pump, services, slots
from jobs.deadline import deadlines_enforce
from jobs.models import Job
from jobs.storage_health import storage_problem
from providers.base import Provider
from providers.registry import get_provider, provider_names

log = logging.getLogger(__name__)

S = Job.Status
# The least pause between two passes of a pump, whatever its interval and however long the pass took.
MIN_PASS_GAP_SECONDS = 0.05


def provider_pump(*, provider_name: str, wait: float = 0.0) -> str:
    """Runs the provider's passes under its lease for up to GENHUB_PUMP_SECONDS, then hands over.

    A pump asked for while another holds the lease leaves a wake-up on it and exits; the holder sees
    the wake-up when it is about to let go and makes another pass (genhub/leases.py), so no request
    is lost. `wait`: take over a lease whose holder died (see `lease_acquire`).
    """
    lease = HeldLease.acquire(f"pump:{provider_name}", wait=wait)
    if lease is None:
        return "skipped: another pump holds the lease (it will make another pass)"
    provider = get_provider(provider_name)
    deadline = time.monotonic() + settings.GENHUB_PUMP_SECONDS
    passes = 0
    released = clean = False
    collector = polled_pump.Collector(provider) if provider.polled else None
    try:
        while not lease.lost.is_set():
            passes += 1
            pass_started = time.monotonic()
            more = _guarded_pass(provider, collector)
            if time.monotonic() >= deadline:
                break
            if not more:
                if lease.release():
                    released = True
                    break
                continue  # a wake-up arrived while this pass ran: make another
            # The interval runs from the start of one pass to the start of the next, so a request is seen
            # done within one interval of finishing however long the pass took (40 status calls to fal take
            # a good part of a second); a floor leaves the database and the remote a breath between passes.
            # A wake-up (new work, a job handed back) ends the rest early.
            lease.nap(max(MIN_PASS_GAP_SECONDS, provider.poll_interval() - (time.monotonic() - pass_started)))
        clean = True
    finally:
        try:
            if collector:
                collector.close()  # every clip collected so far is recorded before the lease goes
                release_freed_memory()  # the decode buffers, so this worker does not keep its high-water mark
        finally:
            if not released:
                # Out of time: hand over to a fresh task while work remains or was asked for. Not after a bug
                # (the fresh task would only hit it again at once): the minute schedule restarts the pump then.
                pending = lease.hand_over()
                if clean and (pending or with_reconnect(lambda: _has_unfinished(provider_name))):
                    from jobs.tasks import pump as pump_task

                    with_reconnect(lambda: pump_task.enqueue(provider_name), what="pump hand-over")
    return f"{passes} pass(es)"


def _guarded_pass(provider: Provider, collector: "polled_pump.Collector | None" = None) -> bool:
    """One pass; a database error (a connection cut under the loop) costs this pass, not the pump."""
    try:
        return _pump_pass(provider, collector)
    except DatabaseError:
        log.exception("%s pump pass failed on the database; reconnecting", provider.name)
        reconnect()
        return True


def pumps_restart() -> list[str]:
    """Enqueues a pump for every provider with unfinished jobs (the scheduled safety net).

    Paused jobs count: a pass re-checks the caps, so a raised cap or a new month resumes them.
    """
    from jobs.tasks import pump as pump_task

    started = [name for name in provider_names()
               if Job.objects.filter(provider=name, status__in=Job.UNFINISHED).exists()]
    for name in started:
        pump_task.enqueue(name)
    return started


def _has_unfinished(provider_name: str) -> bool:
    return Job.objects.filter(provider=provider_name, status__in=Job.ACTIVE).exists()


def _pump_pass(provider: Provider, collector: "polled_pump.Collector | None" = None) -> bool:
    if not provider.polled:
        # Each worker beats for its job from a thread of its own; a job whose beats stopped lost its
        # worker (a killed cluster). The pump finds it within seconds, not at the next scheduled sweep.
        services.jobs_sweep_stale(provider_name=provider.name)
    budget.apply_caps(provider_name=provider.name)
    pending_results.store_due(provider_name=provider.name)
    # While paid clips cannot be stored, new paid work would only pile up more of them: hold it (the
    # GPU, billed by the hour, only once they could not be kept either). Work already paid for is still
    # followed to the end (its result is kept).
    hold = storage_problem()
    if provider.polled:
        polled_pump.polled_pass(provider, collector or polled_pump.Collector(provider), hold=hold,
                                once=collector is None)
    else:
        # Before dispatch, so the jobs that must go to fal to meet a deadline never start on the GPU.
        deadlines_enforce()
        _dispatch_to_workers(provider, hold=hold)
    more = _has_unfinished(provider.name)
    # After the check, so the pass that ends the pump also reports the batch it finished. It only queues
    # deliveries (their own tasks send them): a slow webhook never slows a pump.
    batch_events.events_collect()
    return more


def _dispatch_to_workers(provider: Provider, *, hold: str | None = None) -> None:
    waiting = Job.objects.filter(provider=provider.name, status__in=(S.QUEUED, S.WAITING_FOR_GPU))
    if not waiting.exists():
        return  # asking for capacity with nothing to run would rent a GPU for nobody
    capacity = provider.capacity()
    if capacity is None:
        # No GPU ready: park the queue; the provider has been asked for capacity.
        Job.objects.filter(provider=provider.name, status=S.QUEUED).update(status=S.WAITING_FOR_GPU)
        services.jobs_fall_back_while_gpu_unavailable(provider_name=provider.name)
        return
    Job.objects.filter(provider=provider.name, status=S.WAITING_FOR_GPU).update(status=S.QUEUED)
    if hold and not pending_results.room_to_keep(clips=capacity):
        # The rented GPU is billed by the hour whether it works or not, so while the clips it makes can wait
        # in the pending area (another disk, or local room while a bucket fails) it goes on; it stops only
        # when they could not be kept either. fal bills per clip and holds (polled_pump).
        return
    from jobs.tasks import run_job as run_job_task

    for pk in slots.next_queued(provider, slots.free_slots(provider, capacity)):
        token = uuid.uuid4().hex
        if services.job_claim(job_id=pk, dispatch_token=token):
            run_job_task.enqueue(pk, token)


def job_cancel_remote(*, provider_name: str, ref: dict) -> None:
    """Cancels the remote request a cancelled job had: the reference is the one taken at cancel time,
    since a quick retry may already have given the job a new one."""
    get_provider(provider_name).cancel(ref)
