"""A polled provider's pump pass (fal): submit up to the provider's concurrency, poll every request in
flight from this one loop, fanning HTTP out over a few threads, and collect the clips of completed
requests in the background — hundreds of jobs need no more than one worker.
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from jobs import outcomes, services, slots
from jobs.models import Job
from jobs.storage_health import MB, ROOM_PER_CLIP_BYTES, free_bytes, storage_problem
from providers.base import Completed, Pending, Provider, Submitted
from providers.errors import PermanentError, ProviderError

log = logging.getLogger(__name__)

S = Job.Status
HTTP_THREADS = 8
# The longest wait between two fetches of a completed request's result that failed (the backoff's cap).
RESULT_FETCH_MAX_DELAY = 300.0


def polled_pass(provider: Provider, collector: "Collector", *, hold: str | None, once: bool) -> None:
    """One pass of the fal pump: record the clips collected since the last pass, poll what is in flight,
    hand completed requests to the collector and fill every slot freed — all in this pass.

    The clips of completed requests are fetched and decoded in the collector's threads while this loop
    goes on polling (40 clips take seconds to decode, and fal's slots are free the moment the requests
    complete), so the remote never idles between waves. Only while the disk has room for them, though:
    near a full disk the pass waits for them to be stored before it buys more, so a store that fails
    holds new paid work first (the storage hold, checked again each time)."""
    settled = collector.harvest()
    if not hold:
        _submit_queued(provider, extra=collector.count, fanout=collector.fanout)
    ended, finished = _follow_in_flight(provider, skip=collector.ids, fanout=collector.fanout)
    room = _room_for(collector.count + len(finished))
    if not room:
        for job, completed in finished:
            collector.add(job, completed)
        settled += collector.harvest(wait=True)
    if (settled or ended or finished) and not storage_problem():
        # The freed slots are bought back before their clips are collected: a paid slot at fal idles while
        # genhub submits, whereas a clip fetched a fraction of a second later costs nothing, and the
        # collector's downloads and decodes would otherwise compete with the submits for this process.
        _submit_queued(provider, extra=collector.count + (len(finished) if room else 0), fanout=collector.fanout)
    if room:
        for job, completed in finished:
            collector.add(job, completed)
    if once:
        collector.close()


class Collector:
    """Fetches and checks completed requests' clips over a few threads, in the background of the pump's
    passes; `harvest` records the ones done (on the pump's thread: the threads never touch the database).
    A job being collected is still `running`, but holds no slot at the remote (`count`).

    It also holds the pump's `fanout` threads for submits and status checks: both live as long as the
    pump, so each thread keeps its HTTP connections (providers/http.py: a session per thread)."""

    def __init__(self, provider: Provider):
        self.provider = provider
        self.pool = None
        self.fanout = _Fanout(f"fanout-{provider.name}")
        self.pending: dict[int, tuple[Job, object]] = {}

    @property
    def count(self) -> int:
        return len(self.pending)

    @property
    def ids(self) -> set[int]:
        return set(self.pending)

    def add(self, job: Job, completed: Completed) -> None:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=HTTP_THREADS, thread_name_prefix=f"collect-{self.provider.name}")
        provider = self.provider

        def collect(job: Job):
            finished = provider.collect(job.provider_ref, completed)
            return outcomes.with_files_stored(outcomes.inspected(provider, finished, job), job)

        self.pending[job.pk] = (job, self.pool.submit(outcomes.guarded, collect, job))

    def harvest(self, *, wait: bool = False) -> int:
        """Records the clips collected so far (all of them with `wait`). → how many jobs it settled."""
        done = [pk for pk, (_, future) in self.pending.items() if wait or future.done()]
        beats = _Beats(waiting=[])
        for pk in done:
            job, future = self.pending.pop(pk)
            _followed(self.provider, job, future.result(), beats)
        beats.write()
        return len(done)

    def close(self) -> None:
        try:
            self.harvest(wait=True)
        finally:
            self.fanout.close()
            if self.pool is not None:
                self.pool.shutdown(wait=True)
                self.pool = None


class _Fanout:
    """A few threads for a pump's HTTP calls, kept from pass to pass.

    Each thread has its own HTTP session, so a pool made afresh for every call (every pass, every
    FAL_POLL_INTERVAL) would connect — TCP and TLS to fal — again for each of its calls, and start and
    stop its threads each time; kept, the threads reuse their connections."""

    def __init__(self, name: str):
        self.name = name
        self.pool = None

    def map(self, call, jobs: list[Job]) -> list:
        if len(jobs) <= 1:
            return [outcomes.guarded(call, job) for job in jobs]
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=HTTP_THREADS, thread_name_prefix=self.name)
        return list(self.pool.map(lambda job: outcomes.guarded(call, job), jobs))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None


def _room_for(clips: int) -> bool:
    free = free_bytes(settings.MEDIA_ROOT)
    needed = settings.GENHUB_STORAGE_MIN_FREE_MB * MB + clips * ROOM_PER_CLIP_BYTES
    return free is None or free >= needed


def _submit_queued(provider: Provider, *, extra: int = 0, fanout: "_Fanout | None" = None) -> None:
    """Claims what the free slots allow in one set-based UPDATE, submits over a few threads and records
    the accepted requests in one UPDATE: a bounded number of queries whatever the count."""
    claimed = services.jobs_claim_next(provider_name=provider.name,
                                       limit=slots.free_slots(provider, provider.capacity(), extra=extra))
    if not claimed:
        return
    jobs = list(Job.objects.filter(pk__in=claimed).order_by("batch_id", "position", "id"))
    answers = _fan_out(lambda job: provider.submit(outcomes.generation_request(job)), jobs, fanout)
    submitted = [(job, outcome) for job, outcome in zip(jobs, answers, strict=True) if isinstance(outcome, Submitted)]
    recorded = services.jobs_record_submissions(
        submitted=[(job.pk, job.claims, outcome.external_id, outcome.ref) for job, outcome in submitted])
    for job, outcome in submitted:
        if job.pk not in recorded:
            # Cancelled while the submit was in flight: the remote would go on with work nobody wants.
            provider.cancel(outcome.ref)
    for job, outcome in zip(jobs, answers, strict=True):
        if not isinstance(outcome, Submitted):
            outcomes.settle(job, outcome)


def _follow_in_flight(provider: Provider, skip=(), fanout: "_Fanout | None" = None) -> tuple[int, list]:
    """Polls every request in flight (but those in `skip`, being collected); settles those that failed or
    ran out of time. → (how many of those ended, the (job, Completed) pairs whose clips are to be
    collected)."""
    jobs = [job for job in Job.objects.filter(provider=provider.name, status=S.RUNNING).exclude(external_id="")
            if job.pk not in skip]
    if not jobs:
        return 0, []
    now = timezone.now()
    deadline = now - timedelta(seconds=settings.FAL_JOB_DEADLINE_SECONDS)
    # The deadline runs from when the remote started the request, not from our claim: on a small fal
    # account (2 at once) requests wait IN_QUEUE for a long time, and cancelling them would only put
    # them at the back of the queue. A completed request whose result we could not fetch yet is done
    # and billed: no deadline applies, cancelling it would save nothing.
    overdue = {job.pk for job in jobs if job.remote_started_at and job.remote_started_at < deadline
               and not job.result_fetch_failures}
    resting = [job for job in jobs if job.pk not in overdue and job.next_check_at and job.next_check_at > now]
    jobs = [job for job in jobs if job not in resting]
    # Status only (one small call each): the slots of completed requests are refilled before their
    # outputs are fetched and decoded (polled_pass, Collector). Overdue requests are checked too before
    # they are cancelled: one that completed meanwhile is paid for and is collected, not thrown away.
    answers = _fan_out(lambda job: provider.check(job.provider_ref, collect=False), jobs, fanout)
    beats = _Beats(waiting=[job.pk for job in resting])
    ended, finished = 0, []
    for job, outcome in zip(jobs, answers, strict=True):
        if isinstance(outcome, Completed):
            finished.append((job, outcome))
        elif job.pk in overdue and (isinstance(outcome, Pending) or (
                isinstance(outcome, ProviderError) and outcome.transport and not outcome.permanent)):
            provider.cancel(job.provider_ref)
            services.job_fail(job_id=job.pk, code="deadline", permanent=False, claim=job.claims,
                              message=f"{provider.name} did not finish within {settings.FAL_JOB_DEADLINE_SECONDS}s "
                                      "of starting it")
            ended += 1
        elif not _followed(provider, job, outcome, beats):
            ended += 1
    beats.write()
    return ended, finished


class _Beats:
    """What one pass learnt about the requests still in flight, written set-based at the end."""

    def __init__(self, waiting: list[int]):
        self.waiting, self.notes, self.progress = waiting, [], {}

    def write(self) -> None:
        # One UPDATE each for what the remote said, the progress and the beats of the pass.
        services.jobs_note_remote(notes=self.notes)
        services.jobs_note_progress(progress=self.progress)
        services.job_heartbeat(job_ids=[pk for pk in self.waiting if pk not in self.progress])


def _followed(provider: Provider, job: Job, outcome, beats: _Beats) -> bool:
    """Handles one check's outcome. True: the request is still being followed; False: the job ended
    (succeeded, failed or went back to the queue)."""
    if isinstance(outcome, ProviderError) and outcome.code == "result_fetch_failed":
        if _result_fetch_failed(provider, job, outcome):
            beats.waiting.append(job.pk)
            return True
        return False
    if isinstance(outcome, ProviderError) and outcome.transport and not outcome.permanent:
        # Our call failed, not the request: the remote still has (and bills) it, so keep following it
        # instead of submitting it again. The deadline above bounds how long.
        log.warning("job %s: could not check %s this pass: %s", job.uuid, provider.name, outcome.message)
        beats.waiting.append(job.pk)
        return True
    if isinstance(outcome, Pending):
        beats.waiting.append(job.pk)
        if ((outcome.started and not job.remote_started_at)
                or (not outcome.started and outcome.queue_position != job.queue_position)):
            beats.notes.append((job.pk, job.claims, outcome.started, outcome.queue_position))
        if outcome.progress is not None:
            beats.progress[job.pk] = outcome.progress
        return True
    outcomes.settle(job, outcome)
    return False


def _result_fetch_failed(provider: Provider, job: Job, error: ProviderError) -> bool:
    """The remote finished (and bills) the request but its result did not come: look again later, with
    backoff, a bounded number of times; never submit it again. False when the job was given up on."""
    failures = job.result_fetch_failures + 1
    if failures >= settings.FAL_RESULT_FETCH_TRIES:
        outcomes.settle(job, PermanentError(
            f"{provider.name} finished the clip (and bills it) but its result could not be fetched in {failures} "
            f"tries: {error.message}", code="result_unavailable"))
        return False
    delay = min(RESULT_FETCH_MAX_DELAY, settings.FAL_RESULT_FETCH_BACKOFF_SECONDS * 2 ** (failures - 1))
    log.warning("job %s: result fetch %d failed (%s); next try in %.0fs", job.uuid, failures, error.message, delay)
    services.job_result_fetch_failed(job_id=job.pk, claim=job.claims,
                                     next_check_at=timezone.now() + timedelta(seconds=delay))
    return True


def _fan_out(call, jobs: list[Job], fanout: "_Fanout | None" = None) -> list:
    """Runs `call(job)` for each job over a few threads (the pump's `fanout` when it has one); exceptions
    come back as values.

    The threads only talk HTTP and decode video; they never touch the database, so every read and
    write stays on this thread and its connection.
    """
    if fanout is not None:
        return fanout.map(call, jobs)
    once = _Fanout("genhub-http")
    try:
        return once.map(call, jobs)
    finally:
        once.close()
