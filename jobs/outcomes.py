"""What becomes of a provider's answer, for both kinds of pump: the request built from a job, the clip
checked where it was fetched and its files written, and the job's end recorded — a success, a kept clip
that could not be stored, a failure or a retry — through database blips.
"""

import logging
import mimetypes
import time

from django.conf import settings
from django.db import InterfaceError, OperationalError

from genhub.db import DatabaseError, reconnect
from jobs import artifacts, costs, pending_results, services
from jobs.models import Job
from providers.base import Finished, GenerationRequest, Provider
from providers.errors import PermanentError, ProviderError, TransientError

log = logging.getLogger(__name__)

# Failures after which the remote has finished and bills the attempt although no clip was delivered.
BILLED_FAILURES = {"bad_output", "output_mismatch", "result_unavailable"}


def generation_request(job: Job) -> GenerationRequest:
    with job.input_image.open("rb") as handle:
        image = handle.read()
    content_type = mimetypes.guess_type(job.input_image.name)[0] or "image/png"
    # A worker's provider_ref at its start is the lost work it took over (job_take_dispatch).
    earlier = job.provider_ref if job.provider_ref.get("work") else {}
    return GenerationRequest(job_id=str(job.uuid), image=image, image_content_type=content_type, prompt=job.prompt,
                             negative_prompt=job.negative_prompt, seed=job.seed, params=job.params,
                             work_tag=f"{job.uuid}:{job.claims}", earlier_work=earlier)


def settle(job: Job, outcome) -> None:
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
        db_retry(lambda: services.job_release_unrun(job_id=job.pk, claim=job.claims, code=outcome.code,
                                                    reason=outcome.message), what="hand a job back")
        return
    if isinstance(outcome, ProviderError):
        log.info("job %s failed (%s, %s): %s", job.uuid, outcome.code,
                 "permanent" if outcome.permanent else "transient", outcome.message)
        if outcome.code in BILLED_FAILURES:
            # The provider finished and bills the clip even though no clip is delivered from it.
            cost = costs.job_cost(provider=job.provider, params=job.params, meta={})
            db_retry(lambda: services.job_add_cost(job_id=job.pk, cost=cost, wasted=True),
                      what="record a billed attempt")
        db_retry(lambda: services.job_fail(job_id=job.pk, code=outcome.code, message=outcome.message,
                                            permanent=outcome.permanent, claim=job.claims), what="record a failure")
        return
    finished, facts, *stored = outcome  # `stored`: what with_files_stored did with the files in a collector thread
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
    succeeded = db_retry(lambda: services.job_succeed(
        job_id=job.pk, claim=job.claims, output_video=video_name, poster=poster_name, video_frames=facts.frames,
        video_fps=facts.fps, video_duration=round(facts.duration, 3), video_codec=facts.codec, cost=cost,
        generation_seconds=meta.get("generation_seconds"), instance_id=meta.get("instance_id"),
    ), what="record a result")
    if not succeeded:  # cancelled or handed to another attempt while it ran: nothing points at these files
        artifacts.discard(video_name, poster_name)
        services.job_add_cost(job_id=job.pk, cost=cost, wasted=True)  # paid for all the same


def db_retry(call, *, what: str):
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


def with_files_stored(outcome, job: Job):
    """Writes a checked clip's files where it was checked (files only, no database): → (finished, facts,
    (video name, poster name) or the storage error), which `settle` turns into a success or a kept clip."""
    if not isinstance(outcome, tuple):
        return outcome
    finished, facts = outcome
    try:
        return finished, facts, artifacts.store_output(job_uuid=str(job.uuid), video=finished.video, facts=facts)
    except Exception as exc:
        return finished, facts, exc


def guarded(call, job: Job):
    """`call(job)`, with exceptions as values."""
    try:
        return call(job)
    except ProviderError as exc:
        return exc
    except Exception as exc:  # a bug must fail one job loudly, not kill the pump for all of them
        log.exception("unexpected error on job %s", job.uuid)
        return TransientError(f"internal error: {type(exc).__name__}: {exc}", code="internal_error")


def inspected(provider: Provider, outcome, job: Job):
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
