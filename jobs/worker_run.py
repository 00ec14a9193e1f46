"""A blocking provider's job (vastai), run to the end in the worker that took its `run_job` task: the
generation streamed, its progress and beats recorded, a cancel or a lost claim noticed within a second."""

import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections, connection

from genhub.db import DatabaseError, reconnect
from jobs import outcomes, services
from jobs.models import Job
from providers.errors import ProviderError
from providers.registry import get_provider

log = logging.getLogger(__name__)

S = Job.Status
# The pump finds its own progress fast; a heartbeat more often than this only loads the database.
PROGRESS_EVERY_SECONDS = 1.0
# How often a worker looks whether its job was cancelled (a cheap read): the GPU is freed within about this.
CANCEL_CHECK_SECONDS = 1.0


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
            finished = provider.submit(outcomes.generation_request(job), on_progress=on_progress,
                                       placement=placement, cancel=heartbeat.gone, on_remote=on_remote)
            outcome = outcomes.inspected(provider, finished, job)
        except ProviderError as exc:
            outcome = exc
    # The generation may have outlived this thread's connection (a database restart): a paid result must
    # not be lost to a dead connection, so check it before recording.
    reconnect()
    outcomes.settle(job, outcome)
    return outcomes.db_retry(lambda: Job.objects.values_list("status", flat=True).get(pk=job_id), what="read the job")


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
