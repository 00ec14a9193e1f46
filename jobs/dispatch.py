"""The pumps: one loop per provider moves queued jobs to it and follows them to the end.

A pump runs inside one django-q2 task under a lease (so at most one per provider), makes passes
for up to GENHUB_PUMP_SECONDS and hands over to a fresh task while work remains. Two shapes:

- polled providers (fal): the pump submits up to the provider's concurrency and polls every
  request in flight from this one loop, fanning HTTP out over a few threads; hundreds of jobs
  need no more than one worker.
- blocking providers (vastai): the pump claims up to the in-flight limit and hands each job to
  a `run_job` task that streams the generation; with no GPU ready, jobs wait in
  `waiting_for_gpu` and no worker blocks.
"""

import logging
import mimetypes
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.utils import timezone

from genhub.db import DatabaseError, reconnect, with_reconnect
from genhub.leases import HeldLease
from genhub.memory import release_freed_memory
from jobs import artifacts, batch_events, budget, costs, pending_results, services
from jobs.deadline import deadlines_enforce
from jobs.models import Job
from jobs.storage_health import MB, free_bytes, storage_problem
from providers.base import Completed, Finished, GenerationRequest, Pending, Provider, Submitted
from providers.errors import PermanentError, ProviderError, TransientError
from providers.registry import get_provider, provider_names

log = logging.getLogger(__name__)

S = Job.Status
HTTP_THREADS = 8
# The pump finds its own progress fast; a heartbeat more often than this only loads the database.
PROGRESS_EVERY_SECONDS = 1.0
# Failures after which the remote has finished and bills the attempt although no clip was delivered.
BILLED_FAILURES = {"bad_output", "output_mismatch", "result_unavailable"}
RESULT_FETCH_MAX_DELAY = 300.0
# How often a worker looks whether its job was cancelled (a cheap read): the GPU is freed within about this.
CANCEL_CHECK_SECONDS = 1.0
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
    collector = _Collector(provider) if provider.polled else None
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


def _guarded_pass(provider: Provider, collector: "_Collector | None" = None) -> bool:
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


def _pump_pass(provider: Provider, collector: "_Collector | None" = None) -> bool:
    if not provider.polled:
        # Each worker beats for its job from a thread of its own; a job whose beats stopped lost its
        # worker (a killed cluster). The pump finds it within seconds, not at the next scheduled sweep.
        services.jobs_sweep_stale(provider_name=provider.name)
    budget.apply_caps(provider_name=provider.name)
    pending_results.store_due(provider_name=provider.name)
    # While paid clips cannot be stored, new paid work would only pile up more of them: hold it.
    # Work already paid for is still followed to the end (its result is kept).
    hold = storage_problem()
    if provider.polled:
        _polled_pass(provider, collector or _Collector(provider), hold=hold, once=collector is None)
    else:
        # Before dispatch, so the jobs that must go to fal to meet a deadline never start on the GPU.
        deadlines_enforce()
        _dispatch_to_workers(provider, hold=hold)
    more = _has_unfinished(provider.name)
    # After the check, so the pass that ends the pump also reports the batch it finished. It only queues
    # deliveries (their own tasks send them): a slow webhook never slows a pump.
    batch_events.events_collect()
    return more


def _polled_pass(provider: Provider, collector: "_Collector", *, hold: str | None, once: bool) -> None:
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


class _Collector:
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
        self.pending[job.pk] = (job, self.pool.submit(
            _guarded, lambda job: _stored(_inspected(provider, provider.collect(job.provider_ref, completed), job),
                                          job), job))

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
            return [_guarded(call, job) for job in jobs]
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=HTTP_THREADS, thread_name_prefix=self.name)
        return list(self.pool.map(lambda job: _guarded(call, job), jobs))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None


# Room a clip is assumed to need before it is stored: far above a real 5 s clip (a few MB), so new work
# is bought ahead of storing only while the disk is nowhere near full.
ROOM_PER_CLIP_BYTES = 50 * 1024 * 1024


def _room_for(clips: int) -> bool:
    free = free_bytes(settings.MEDIA_ROOT)
    needed = settings.GENHUB_STORAGE_MIN_FREE_MB * MB + clips * ROOM_PER_CLIP_BYTES
    return free is None or free >= needed


def _free_slots(provider: Provider, capacity: int, *, extra: int = 0) -> int:
    """Capacity minus what is running; `extra`: running jobs whose remote request has already completed
    (their results are still being checked), which hold no slot at the remote."""
    in_flight = Job.objects.filter(provider=provider.name, status=S.RUNNING).count() - extra
    return max(0, capacity - in_flight)


def _next_queued(provider: Provider, limit: int) -> list[int]:
    if limit <= 0:
        return []
    # Oldest batch first, in the order the user gave the items.
    queued = Job.objects.filter(provider=provider.name, status=S.QUEUED).order_by("batch_id", "position", "id")
    return list(queued.values_list("pk", flat=True)[:limit])


# --- polled providers ---------------------------------------------------------------------


def _submit_queued(provider: Provider, *, extra: int = 0, fanout: "_Fanout | None" = None) -> None:
    """Claims what the free slots allow in one set-based UPDATE, submits over a few threads and records
    the accepted requests in one UPDATE: a bounded number of queries whatever the count."""
    claimed = services.jobs_claim_next(provider_name=provider.name,
                                       limit=_free_slots(provider, provider.capacity(), extra=extra))
    if not claimed:
        return
    jobs = list(Job.objects.filter(pk__in=claimed).order_by("batch_id", "position", "id"))
    outcomes = _fan_out(lambda job: provider.submit(generation_request(job)), jobs, fanout)
    submitted = [(job, outcome) for job, outcome in zip(jobs, outcomes, strict=True) if isinstance(outcome, Submitted)]
    recorded = services.jobs_record_submissions(
        submitted=[(job.pk, job.claims, outcome.external_id, outcome.ref) for job, outcome in submitted])
    for job, outcome in submitted:
        if job.pk not in recorded:
            # Cancelled while the submit was in flight: the remote would go on with work nobody wants.
            provider.cancel(outcome.ref)
    for job, outcome in zip(jobs, outcomes, strict=True):
        if not isinstance(outcome, Submitted):
            _settle(job, outcome)


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
    # outputs are fetched and decoded (_polled_pass, _Collector). Overdue requests are checked too before
    # they are cancelled: one that completed meanwhile is paid for and is collected, not thrown away.
    outcomes = _fan_out(lambda job: provider.check(job.provider_ref, collect=False), jobs, fanout)
    beats = _Beats(waiting=[job.pk for job in resting])
    ended, finished = 0, []
    for job, outcome in zip(jobs, outcomes, strict=True):
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
    _settle(job, outcome)
    return False


def _result_fetch_failed(provider: Provider, job: Job, error: ProviderError) -> bool:
    """The remote finished (and bills) the request but its result did not come: look again later, with
    backoff, a bounded number of times; never submit it again. False when the job was given up on."""
    failures = job.result_fetch_failures + 1
    if failures >= settings.FAL_RESULT_FETCH_TRIES:
        _settle(job, PermanentError(
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
    if len(jobs) <= 1:
        return [_guarded(call, job) for job in jobs]
    with ThreadPoolExecutor(max_workers=min(HTTP_THREADS, len(jobs))) as pool:
        return list(pool.map(lambda job: _guarded(call, job), jobs))


def _stored(outcome, job: Job):
    """Writes a checked clip's files where it was checked (files only, no database): → (finished, facts,
    (video name, poster name) or the storage error), which _record turns into a success or a kept clip."""
    if not isinstance(outcome, tuple):
        return outcome
    finished, facts = outcome
    try:
        return finished, facts, artifacts.store_output(job_uuid=str(job.uuid), video=finished.video, facts=facts)
    except Exception as exc:
        return finished, facts, exc


def _guarded(call, job: Job):
    """`call(job)`, with exceptions as values."""
    try:
        return call(job)
    except ProviderError as exc:
        return exc
    except Exception as exc:  # a bug must fail one job loudly, not kill the pump for all of them
        log.exception("unexpected error on job %s", job.uuid)
        return TransientError(f"internal error: {type(exc).__name__}: {exc}", code="internal_error")


def _inspected(provider: Provider, outcome, job: Job):
    """Checks a finished video where it was fetched (in the worker thread), so bad files fail early.

    A clip that decodes but contradicts the request (fps, frame count) is confirmed once — fetched
    again when the provider can serve it again, else inspected again — and then fails for good: the
    remote made what it was told, so generating it again would pay for the same clip again.
    """
    if not isinstance(outcome, Finished):
        return outcome
    facts = artifacts.inspect_video(outcome.video)
    try:
        artifacts.check_matches_request(facts, job.params, exact_size=provider.renders_requested_size)
    except artifacts.OutputMismatchError as first:
        video = provider.fetch_output(outcome.source) if outcome.source else outcome.video
        facts = artifacts.inspect_video(video)
        try:
            artifacts.check_matches_request(facts, job.params, exact_size=provider.renders_requested_size)
        except artifacts.OutputMismatchError as again:
            raise PermanentError(
                f"{provider.name} returned a clip that contradicts the request, confirmed on a second look: "
                f"{again.message}. It is not generated again (that would be billed for the same result).",
                code="output_mismatch") from first
        outcome = Finished(video=video, content_type=outcome.content_type, meta=outcome.meta, source=outcome.source)
    return outcome, facts


# --- blocking providers --------------------------------------------------------------------


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
    if hold:
        return  # storage is failing: no new paid GPU work (see storage_problem)
    from jobs.tasks import run_job as run_job_task

    for pk in _next_queued(provider, _free_slots(provider, capacity)):
        token = uuid.uuid4().hex
        if services.job_claim(job_id=pk, dispatch_token=token):
            run_job_task.enqueue(pk, token)


def job_run_dispatched(*, job_id: int, dispatch_token: str) -> str:
    """Runs one claimed job on a blocking provider, in this worker, to the end."""
    if not services.job_take_dispatch(job_id=job_id, dispatch_token=dispatch_token):
        return "skipped: duplicate delivery, or the job is no longer running"
    job = Job.objects.get(pk=job_id)
    provider = get_provider(job.provider)
    try:
        placement = provider.placement()
    except ProviderError as exc:
        # The GPU went away between dispatch and start: nothing ran, so no attempt is used up.
        services.job_release(job_id=job.pk, claim=job.claims, reason=exc.message)
        return "no capacity: back to the queue"
    # Recorded before the work starts, so a dying instance can hand its jobs back to the queue.
    services.job_place(job_id=job.pk, claim=job.claims, instance_id=placement.get("instance_id"))
    last_beat = 0.0
    started = False

    def on_progress(fraction: float) -> None:
        nonlocal last_beat, started
        if time.monotonic() - last_beat >= PROGRESS_EVERY_SECONDS or not started:
            last_beat = time.monotonic()
            try:
                if not started:
                    # The GPU took the job (the first report): from here a lost attempt counts.
                    services.job_note_remote(job_id=job.pk, claim=job.claims, started=True, queue_position=None)
                    started = True
                services.job_heartbeat(job_ids=[job.pk], progress=fraction, claim=job.claims)
            except DatabaseError:
                # Raised into the client, this would abandon a generation the GPU is still making (and
                # bills). The heartbeat thread keeps the job alive meanwhile; the next report reconnects.
                log.warning("job %s: could not record progress (database error); generation continues",
                            job.uuid, exc_info=True)
                reconnect()

    def on_remote(ref: dict) -> None:
        # Should this worker die mid-generation, whoever requeues the job interrupts the remote work with it.
        try:
            services.job_record_remote_work(job_id=job.pk, claim=job.claims, ref=ref)
        except DatabaseError:
            log.warning("job %s: could not record its remote reference (database error); generation continues",
                        job.uuid, exc_info=True)
            reconnect()

    with _Heartbeat(job.pk, job.claims) as heartbeat:
        try:
            outcome = _inspected(provider, provider.submit(generation_request(job), on_progress=on_progress,
                                                           placement=placement, cancel=heartbeat.gone,
                                                           on_remote=on_remote), job)
        except ProviderError as exc:
            outcome = exc
    # The generation may have outlived this thread's connection (a database restart): a paid result must
    # not be lost to a dead connection, so check it before recording.
    reconnect()
    _settle(job, outcome)
    return _db_retry(lambda: Job.objects.values_list("status", flat=True).get(pk=job_id), what="read the job")


class _Heartbeat:
    """Beats for a job while this worker holds it, whether or not the provider reports progress, and
    notices when the job is no longer this worker's.

    A job queued inside SwarmUI behind a long generation hears nothing for minutes; without its own
    beat the stale sweep would take it for lost and run it a second time. Every CANCEL_CHECK_SECONDS it
    also reads whether the job still runs this claim: once cancelled (or handed to another attempt) it
    sets `gone`, and the provider interrupts the generation so the GPU is free for the next job.
    """

    def __init__(self, job_id: int, claim: int):
        self.job_id, self.claim = job_id, claim
        self.stop = threading.Event()
        self.gone = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def _run(self):
        last_beat = time.monotonic()
        try:
            while not self.stop.wait(min(CANCEL_CHECK_SECONDS, settings.GENHUB_HEARTBEAT_SECONDS)):
                try:
                    if not Job.objects.filter(pk=self.job_id, status=S.RUNNING, claims=self.claim).exists():
                        log.info("job %s is no longer running this attempt: stopping its generation", self.job_id)
                        self.gone.set()
                        return
                    if time.monotonic() - last_beat >= settings.GENHUB_HEARTBEAT_SECONDS:
                        services.job_heartbeat(job_ids=[self.job_id], claim=self.claim)
                        last_beat = time.monotonic()
                except Exception:  # a dropped connection must not end the beat for good, nor the generation
                    log.exception("heartbeat for job %s failed; trying again", self.job_id)
                    close_old_connections()
        finally:
            connection.close()  # this thread's own connection

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        self.thread.join()


# --- shared ------------------------------------------------------------------------------


def generation_request(job: Job) -> GenerationRequest:
    with job.input_image.open("rb") as handle:
        image = handle.read()
    content_type = mimetypes.guess_type(job.input_image.name)[0] or "image/png"
    # A worker's provider_ref at its start is the lost work it took over (job_take_dispatch).
    earlier = job.provider_ref if job.provider_ref.get("work") else {}
    return GenerationRequest(job_id=str(job.uuid), image=image, image_content_type=content_type, prompt=job.prompt,
                             negative_prompt=job.negative_prompt, seed=job.seed, params=job.params,
                             work_tag=f"{job.uuid}:{job.claims}", earlier_work=earlier)


def _settle(job: Job, outcome) -> None:
    """Records a job's end: a checked video becomes a success, an error a failure or a retry.

    One job's trouble here (a full disk, a lost database connection) fails that attempt only,
    never the pump pass that is settling the other jobs.
    """
    try:
        _record(job, outcome)
    except DatabaseError:
        # The database stayed away longer than the retries: recording a failure would fail the same way.
        # The job stays running until the stale sweep requeues it.
        log.exception("could not record the outcome of job %s: the database did not come back", job.uuid)
    except Exception as exc:
        log.exception("could not record the outcome of job %s", job.uuid)
        services.job_fail(job_id=job.pk, code="internal_error", permanent=False, claim=job.claims,
                          message=f"genhub could not record the result: {type(exc).__name__}: {exc}")


def _record(job: Job, outcome) -> None:
    if isinstance(outcome, ProviderError) and outcome.nothing_ran:
        log.info("job %s handed back (%s): %s", job.uuid, outcome.code, outcome.message)
        _db_retry(lambda: services.job_release_unrun(job_id=job.pk, claim=job.claims, code=outcome.code,
                                                    reason=outcome.message), what="hand a job back")
        return
    if isinstance(outcome, ProviderError):
        log.info("job %s failed (%s, %s): %s", job.uuid, outcome.code,
                 "permanent" if outcome.permanent else "transient", outcome.message)
        if outcome.code in BILLED_FAILURES:
            # The provider finished and bills the clip even though no clip is delivered from it.
            cost = costs.job_cost(provider=job.provider, params=job.params, meta={})
            _db_retry(lambda: services.job_add_cost(job_id=job.pk, cost=cost, wasted=True),
                      what="record a billed attempt")
        _db_retry(lambda: services.job_fail(job_id=job.pk, code=outcome.code, message=outcome.message,
                                            permanent=outcome.permanent, claim=job.claims), what="record a failure")
        return
    finished, facts, *stored = outcome  # `stored`: what _stored did with the files in a collector thread
    meta = finished.meta
    cost = costs.job_cost(provider=job.provider, params=job.params, meta=meta)
    try:
        if stored and isinstance(stored[0], Exception):
            raise stored[0]
        video_name, poster_name = stored[0] if stored else artifacts.store_output(
            job_uuid=str(job.uuid), video=finished.video, facts=facts)
    except Exception as exc:
        # A paid clip is never thrown away to be generated again: it is kept and stored later.
        log.exception("job %s: could not store its result", job.uuid)
        if pending_results.keep(job=job, finished=finished, cost=cost, error=exc):
            return
        services.job_add_cost(job_id=job.pk, cost=cost, wasted=True)
        services.job_fail(job_id=job.pk, code="storage_error", permanent=False, claim=job.claims,
                          message=f"genhub could not store the paid clip nor keep it for later: "
                                  f"{type(exc).__name__}: {exc}")
        return
    # A paid result: the database may be briefly away, so the success is retried, never given up at once.
    succeeded = _db_retry(lambda: services.job_succeed(
        job_id=job.pk, claim=job.claims, output_video=video_name, poster=poster_name, video_frames=facts.frames,
        video_fps=facts.fps, video_duration=round(facts.duration, 3), video_codec=facts.codec, cost=cost,
        generation_seconds=meta.get("generation_seconds"), instance_id=meta.get("instance_id"),
    ), what="record a result")
    if not succeeded:  # cancelled or handed to another attempt while it ran: nothing points at these files
        artifacts.discard(video_name, poster_name)
        services.job_add_cost(job_id=job.pk, cost=cost, wasted=True)  # paid for all the same


def _db_retry(call, *, what: str):
    """Runs a database write, reconnecting and trying again for up to GENHUB_DB_RETRY_SECONDS when the
    database is away (a restart, a failover, a terminated connection). Other errors pass at once."""
    deadline = time.monotonic() + settings.GENHUB_DB_RETRY_SECONDS
    pause = 0.5
    while True:
        try:
            return call()
        except (OperationalError, InterfaceError):  # the connection, not the data: bad data would fail again
            if time.monotonic() >= deadline:
                raise
            log.warning("could not %s (database error); reconnecting and trying again", what, exc_info=True)
            reconnect()
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def job_cancel_remote(*, provider_name: str, ref: dict) -> None:
    """Cancels the remote request a cancelled job had: the reference is the one taken at cancel time,
    since a quick retry may already have given the job a new one."""
    get_provider(provider_name).cancel(ref)
