"""Everything that changes a batch or a job.

Every job transition is a compare-and-set (`UPDATE … WHERE id = … AND status IN (…)`): a task
delivered twice, a worker killed mid-task or two pumps racing find 0 rows updated and do nothing,
so no job runs twice and none is lost.
"""

import logging
import secrets
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import Case, CharField, F, FloatField, JSONField, PositiveIntegerField, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from genhub.processes import is_gone, this_process
from gpu_instances import speed
from jobs.batch_events import batch_reopened
from jobs.intake import BatchSpec, BatchValidationError, item_params_for
from jobs.models import BatchAppend, BatchRun, Job

log = logging.getLogger(__name__)

S = Job.Status


class ApplicationError(Exception):
    """A request that is well-formed but not allowed in the current state (→ HTTP 409/400)."""


def _enqueue_pump(provider: str) -> None:
    from jobs.tasks import pump as pump_task

    transaction.on_commit(lambda: pump_task.enqueue(provider))


# --- creation -------------------------------------------------------------------------------


def _store_input(image) -> tuple[str, bool]:
    """Content-addressed: the same picture in many jobs (or batches) is stored once. → (name, newly written)"""
    name = f"inputs/{image.sha256[:2]}/{image.sha256}.{image.extension}"
    if default_storage.exists(name):
        return name, False
    # One image (at most GENHUB_MAX_IMAGE_BYTES) in memory at a time.
    return default_storage.save(name, ContentFile(image.source.read())), True


def _forget_inputs(names: list[str]) -> None:
    """Deletes input files this request wrote, unless a job (another batch, committed meanwhile) uses them."""
    for name in names:
        if not Job.objects.filter(input_image=name).exists():
            default_storage.delete(name)


def _store_inputs(spec: BatchSpec, written: list[str]) -> dict[str, str]:
    """Stores the spec's uploaded images (once each) → {sha256: stored name}; names it wrote go to `written`."""
    stored = {}
    for item in spec.items:
        if item.image is not None and item.image.sha256 not in stored:
            stored[item.image.sha256], new = _store_input(item.image)
            if new:
                written.append(stored[item.image.sha256])
    return stored


def _create_jobs(batch: BatchRun, spec: BatchSpec, stored: dict[str, str], first_position: int) -> list[Job]:
    """The spec's items as jobs: an upload is queued, an item by URL waits in `fetching` for its image."""
    jobs = []
    for position, item in enumerate(spec.items, start=first_position):
        common = dict(batch=batch, owner_id=batch.owner_id, provider=batch.provider, position=position,
                      input_name=item.name, prompt=item.prompt, negative_prompt=item.negative_prompt, seed=item.seed,
                      params=item.params, max_attempts=settings.GENHUB_JOB_MAX_ATTEMPTS)
        if item.image is None:
            jobs.append(Job(**common, status=S.FETCHING, image_url=item.image_url, input_image="", input_sha256=""))
        else:
            jobs.append(Job(**common, input_image=stored[item.image.sha256], input_sha256=item.image.sha256))
    created = Job.objects.bulk_create(jobs, batch_size=500)
    if any(job.status == S.QUEUED for job in created):
        _enqueue_pump(batch.provider)
    if any(job.status == S.FETCHING for job in created):
        from jobs.fetching import fetch_enqueue

        transaction.on_commit(fetch_enqueue)
    return created


def batch_create(*, owner, spec: BatchSpec) -> BatchRun:
    """Creates the batch and all its jobs in one transaction; the pump (and, for items by URL, the image
    fetcher) is enqueued once, on commit.

    Inputs are stored first (the rows point at them) and are part of the all-or-nothing: if the
    transaction fails, the files it wrote are deleted again.
    """
    written = []
    try:
        stored = _store_inputs(spec, written)
        with transaction.atomic():
            batch = BatchRun.objects.create(owner=owner, name=spec.name, provider=spec.provider, preset=spec.preset,
                                            params=spec.params, budget_usd=spec.budget_usd,
                                            fallback_policy=spec.fallback_policy, fallback_after=spec.fallback_after,
                                            deadline=spec.deadline, webhook_url=spec.webhook_url,
                                            webhook_events=spec.webhook_events,
                                            # Per batch, so a receiver can only ever verify (or, leaked, forge)
                                            # its own batch's events; shown once, in the creating answer.
                                            webhook_secret=secrets.token_urlsafe(32) if spec.webhook_url else "")
            _create_jobs(batch, spec, stored, first_position=0)
    except BaseException:
        _forget_inputs(written)
        raise
    return batch


class IdempotencyConflict(ApplicationError):
    """The Idempotency-Key was already used on this batch for a different request."""


def batch_append(*, batch: BatchRun, spec: BatchSpec, idempotency_key: str = "",
                 fingerprint: str = "") -> tuple[BatchAppend | None, list[Job], bool]:
    """Appends the spec's items to `batch`, after its last position; all or nothing.

    → (the append's record when a key was given, the jobs it appended, whether this is a replay). A
    request whose key this batch has already seen appends nothing: it is answered with the first one's
    jobs, so a client that retries after a lost reply gets no duplicates. The batch row is locked while
    positions and the item limit are worked out, so concurrent appends queue up instead of colliding.
    """
    written = []
    try:
        with transaction.atomic():
            locked = BatchRun.objects.select_for_update().get(pk=batch.pk)
            if idempotency_key:
                earlier = BatchAppend.objects.filter(batch=locked, key=idempotency_key).first()
                if earlier is not None:
                    return earlier, _appended_jobs(earlier), _replay(earlier, fingerprint)
            if locked.cancel_requested_at is not None:
                raise ApplicationError("this batch was cancelled: nothing can be appended to it")
            existing = locked.jobs.count()
            limit = settings.GENHUB_MAX_BATCH_ITEMS
            if existing + len(spec.items) > limit:
                raise BatchValidationError([{"field": "items", "message": (
                    f"too many items: the batch has {existing} and this request adds {len(spec.items)}; the limit "
                    f"is {limit} per batch (GENHUB_MAX_BATCH_ITEMS)")}])
            last = locked.jobs.order_by("-position").values_list("position", flat=True).first()
            first_position = 0 if last is None else last + 1
            stored = _store_inputs(spec, written)
            jobs = _create_jobs(locked, spec, stored, first_position)
            record = None
            if idempotency_key:
                record = BatchAppend.objects.create(batch=locked, key=idempotency_key, fingerprint=fingerprint,
                                                    first_position=first_position, count=len(jobs))
    except BaseException:
        _forget_inputs(written)
        raise
    return record, jobs, False


def _appended_jobs(record: BatchAppend) -> list[Job]:
    return list(record.batch.jobs.filter(position__gte=record.first_position,
                                         position__lt=record.first_position + record.count).order_by("position"))


def _replay(record: BatchAppend, fingerprint: str) -> bool:
    if fingerprint and record.fingerprint and fingerprint != record.fingerprint:
        raise IdempotencyConflict(f"the Idempotency-Key {record.key!r} was already used on this batch for a "
                                  "different request; use a new key for new items")
    return True


# --- images by URL (jobs/fetching.py) ------------------------------------------------------


def pump_enqueue(provider: str) -> None:
    """Starts (or wakes) the provider's pump, once the current transaction commits."""
    _enqueue_pump(provider)


def jobs_image_fetched(*, job_ids, image) -> dict[str, int]:
    """fetching → queued for these jobs, now that their image is checked: stored like an upload (by its
    sha256, once), with the output size it implies. Jobs cancelled meanwhile are left alone.

    → {provider: jobs queued}. The caller starts those pumps (`pump_enqueue`), once for many images."""
    name, _ = _store_input(image)
    moved: dict[str, int] = {}
    with transaction.atomic():
        waiting = Job.objects.filter(pk__in=list(job_ids), status=S.FETCHING)
        # One UPDATE per batch (usually one): a batch's jobs share its parameters, so share the output size.
        for batch_id, provider, params in (BatchRun.objects.filter(jobs__in=waiting).distinct()
                                           .values_list("id", "provider", "params")):
            count = waiting.filter(batch_id=batch_id).update(
                status=S.QUEUED, input_image=name, input_sha256=image.sha256,
                params=item_params_for(params, image.width, image.height))
            if count:
                moved[provider] = moved.get(provider, 0) + count
    return moved


def jobs_image_unavailable(*, job_ids, reason: str) -> int:
    """fetching → failed: the image could not be had. The batch goes on with its other items."""
    return Job.objects.filter(pk__in=list(job_ids), status=S.FETCHING).update(
        status=S.FAILED, error_code="image_unavailable", error_message=reason[:2000], finished_at=timezone.now())


# --- transitions ----------------------------------------------------------------------------


def job_claim(*, job_id: int, dispatch_token: str = "") -> bool:
    """queued → running, counting the attempt. False: someone else claimed it, or it was cancelled."""
    return Job.objects.filter(pk=job_id, status=S.QUEUED).update(**_claim_fields(timezone.now(), dispatch_token)) == 1


def _claim_fields(now, dispatch_token: str) -> dict:
    return dict(status=S.RUNNING, attempts=F("attempts") + 1, claims=F("claims") + 1, started_at=now, heartbeat_at=now,
                progress=0.0, error_code="", error_message="", external_id="", provider_ref={},
                dispatch_token=dispatch_token, worker="", instance=None, remote_started_at=None, queue_position=None,
                result_fetch_failures=0, next_check_at=None)


def jobs_claim_next(*, provider_name: str, limit: int) -> list[int]:
    """queued → running for the next `limit` jobs in queue order, in one transaction of two statements
    whatever `limit` is: `SELECT … ORDER BY … LIMIT n FOR UPDATE SKIP LOCKED`, then one UPDATE of those
    ids. Rows another pump or worker holds are skipped, not waited for; the rows taken stay locked
    until the UPDATE, so none can be cancelled in between. → the claimed ids, in queue order.

    Not `UPDATE … WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)` in one statement: PostgreSQL
    may run that subquery again per row, skip the rows the UPDATE itself just locked and so claim more
    than `n` (seen here: 5 claimed for 2 free slots).
    """
    if limit <= 0:
        return []
    candidates = (Job.objects.filter(provider=provider_name, status=S.QUEUED)
                  .order_by("batch_id", "position", "id").values_list("pk", flat=True))
    with transaction.atomic():
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        ids = list(candidates[:limit])
        if ids:
            Job.objects.filter(pk__in=ids, status=S.QUEUED).update(**_claim_fields(timezone.now(), ""))
    return ids


def jobs_record_submissions(*, submitted: list[tuple[int, int, str, dict]]) -> set[int]:
    """Stores the remote's request ids and URLs for many jobs (id, claim, external id, ref) in one
    UPDATE; → the ids recorded. A job missing from the answer was cancelled (or given up on) while its
    submit was in flight."""
    if not submitted:
        return set()
    ids = [job_id for job_id, _claim, _ext, _ref in submitted]
    still = Q()
    for job_id, claim, _ext, _ref in submitted:
        still |= Q(pk=job_id, claims=claim)
    Job.objects.filter(still, status=S.RUNNING).update(
        external_id=Case(*[When(pk=job_id, then=Value(ext)) for job_id, _c, ext, _r in submitted],
                         output_field=CharField()),
        provider_ref=Case(*[When(pk=job_id, then=Value(ref, output_field=JSONField()))
                            for job_id, _c, _e, ref in submitted], output_field=JSONField()),
        dispatch_token="", heartbeat_at=timezone.now())
    recorded = Job.objects.filter(pk__in=ids, status=S.RUNNING).exclude(external_id="").values_list("pk", "external_id")
    wanted = {job_id: ext for job_id, _c, ext, _r in submitted}
    return {job_id for job_id, ext in recorded if wanted[job_id] == ext}


def job_take_dispatch(*, job_id: int, dispatch_token: str) -> bool:
    """The worker's claim on a dispatched job: only the first delivery of its task gets True."""
    return Job.objects.filter(pk=job_id, status=S.RUNNING, dispatch_token=dispatch_token).exclude(
        dispatch_token="").update(dispatch_token="", worker=this_process(), heartbeat_at=timezone.now(),
                                  # Taken over as this attempt's own, so that it is not forgotten should
                                  # this worker be lost too (the sweep keeps provider_ref as lost_work).
                                  provider_ref=F("lost_work"), lost_work={}) == 1


def job_record_submission(*, job_id: int, external_id: str, ref: dict) -> bool:
    """Stores the remote's request id and URLs the moment it accepted the work."""
    return Job.objects.filter(pk=job_id, status=S.RUNNING).update(
        external_id=external_id, provider_ref=ref, heartbeat_at=timezone.now()) == 1


def job_heartbeat(*, job_ids, progress: float | None = None, claim: int | None = None) -> int:
    fields = {"heartbeat_at": timezone.now()}
    if progress is not None:
        fields["progress"] = max(0.0, min(1.0, progress))
        fields["progress_at"] = fields["heartbeat_at"]  # the GPU watchdog's sign of life
    running = Job.objects.filter(pk__in=list(job_ids), status=S.RUNNING)
    if claim is not None:
        running = running.filter(claims=claim)
    return running.update(**fields)


def jobs_note_progress(*, progress: dict[int, float]) -> int:
    """Each running job's own progress, and a beat, in one UPDATE (the fal pump's pass)."""
    if not progress:
        return 0
    return Job.objects.filter(pk__in=list(progress), status=S.RUNNING).update(
        heartbeat_at=timezone.now(),
        progress=Case(*[When(pk=pk, then=Value(max(0.0, min(1.0, value)))) for pk, value in progress.items()],
                      default=F("progress"), output_field=FloatField()))


def job_release(*, job_id: int, claim: int, reason: str) -> bool:
    """Hands a claimed job back untouched (nowhere to run it after all): the attempt does not count. Lost
    work this attempt had taken over (job_take_dispatch) goes back with it, for the next attempt to look for,
    unless the sweep has just recorded what to look for (it knows whether that worker is gone)."""
    released = _running(job_id, claim).update(
        status=S.QUEUED, attempts=F("attempts") - 1, progress=0.0, heartbeat_at=None, dispatch_token="",
        error_code="", error_message=reason[:2000], instance=None,
        lost_work=Case(When(Q(lost_work={}) & Q(provider_ref__has_key="work"), then=F("provider_ref")),
                       default=F("lost_work")))
    if released:
        job = Job.objects.only("provider").get(pk=job_id)
        _enqueue_pump(job.provider)
    return released == 1


# A job handed back this many times without ever running has its attempts counted again: a machine that
# answers its probes but never takes a job must not keep one circulating for ever.
MAX_UNRUN_HANDBACKS = 10


def job_release_unrun(*, job_id: int, claim: int, code: str, reason: str) -> bool:
    """Hands back a job whose remote never started it (its machine stopped answering first), without using an
    attempt, within MAX_UNRUN_HANDBACKS (claims beyond attempts are the hand-backs so far)."""
    handed_back = Job.objects.filter(pk=job_id).values_list(F("claims") - F("attempts"), flat=True).first() or 0
    if handed_back >= MAX_UNRUN_HANDBACKS:
        return job_fail(job_id=job_id, code=code, message=reason, permanent=False, claim=claim) is not None
    return job_release(job_id=job_id, claim=claim, reason=reason)


def job_record_remote_work(*, job_id: int, claim: int, ref: dict) -> bool:
    """What identifies a blocking provider's work remotely (its SwarmUI session), recorded before it is sent."""
    return _running(job_id, claim).update(provider_ref=ref) == 1


def job_place(*, job_id: int, claim: int, instance_id: int | None) -> bool:
    # The watchdog's clock for this generation starts here: placed, it must start and advance.
    return _running(job_id, claim).update(instance_id=instance_id, progress_at=timezone.now()) == 1


def jobs_release_for_instance(*, instance_id: int, reason: str) -> int:
    """The instance's generations were interrupted by the GPU watchdog (a stall, not the jobs' fault):
    back to the queue without using up an attempt. Each job's claim as found must still hold."""
    jobs = Job.objects.filter(status=S.RUNNING, instance_id=instance_id).values_list("pk", "claims")
    return sum(1 for job_id, claim in list(jobs) if job_release(job_id=job_id, claim=claim, reason=reason))


def _running(job_id: int, claim: int | None):
    """The job, if it is still running this claim. A report from an attempt that was already given
    up on (its instance died, the sweep requeued it, it fell back to fal) must not touch a later one."""
    running = Job.objects.filter(pk=job_id, status=S.RUNNING)
    return running if claim is None else running.filter(claims=claim)


def job_add_cost(*, job_id: int, cost: Decimal | None, wasted: bool = False) -> None:
    """Adds what an attempt was billed, so failed paid attempts count towards the job and its caps.
    `wasted`: the attempt delivered no clip (a bad output, a result that could not be had)."""
    if cost:
        fields = {"cost_usd": Coalesce(F("cost_usd"), Value(Decimal("0"))) + cost}
        if wasted:
            fields["wasted_usd"] = F("wasted_usd") + cost
        Job.objects.filter(pk=job_id).update(**fields)


def job_succeed(*, job_id: int, claim: int | None = None, cost: Decimal | None = None, **fields) -> bool:
    if cost is not None:
        fields["cost_usd"] = Coalesce(F("cost_usd"), Value(Decimal("0"))) + cost
    succeeded = _running(job_id, claim).update(
        status=S.SUCCEEDED, progress=1.0, finished_at=timezone.now(), error_code="", error_message="", **fields
    ) == 1
    if succeeded and fields.get("instance_id") and fields.get("generation_seconds"):
        # What the GPU measured becomes its speed history (qualification, ranking, estimates).
        params = Job.objects.values_list("params", flat=True).get(pk=job_id)
        speed.record_job_sample(instance_id=fields["instance_id"], params=params,
                                seconds=fields["generation_seconds"])
    return succeeded


def job_fail(*, job_id: int, code: str, message: str, permanent: bool, claim: int | None = None) -> str | None:
    """A running job failed. Transient failures go back to the queue while attempts remain.

    Returns the new status, or None when the job was no longer running (cancelled meanwhile, or a
    duplicate report).
    """
    now = timezone.now()
    message = message[:2000]
    running = _running(job_id, claim)
    if not permanent and _falls_back_after_attempts(job_id):
        if job_fall_back(job_id=job_id, from_states=(S.RUNNING,), claim=claim,
                         reason=f"failed on the GPU: {message}"):
            return S.QUEUED
    if not permanent:
        requeued = running.filter(attempts__lt=F("max_attempts")).update(
            status=S.QUEUED, error_code=code, error_message=message, progress=0.0, heartbeat_at=None,
            dispatch_token="")
        if requeued:
            job = Job.objects.only("provider").get(pk=job_id)
            _enqueue_pump(job.provider)
            return S.QUEUED
    failed = running.update(status=S.FAILED, error_code=code, error_message=message, finished_at=now,
                            dispatch_token="")
    return S.FAILED if failed else None


# --- polled requests at the remote ----------------------------------------------------------


def job_note_remote(*, job_id: int, claim: int, started: bool, queue_position: int | None) -> bool:
    """What the remote said about a request still waiting: started (the deadline runs from then) or its
    place in the remote's own queue."""
    running = _running(job_id, claim)
    if started:
        return running.filter(remote_started_at__isnull=True).update(
            remote_started_at=timezone.now(), queue_position=None) == 1
    return running.filter(remote_started_at__isnull=True).exclude(queue_position=queue_position).update(
        queue_position=queue_position) == 1


def jobs_note_remote(*, notes: list[tuple[int, int, bool, int | None]]) -> int:
    """job_note_remote for many (id, claim, started, queue position) at once: one UPDATE for those that
    started, one for those whose place in the remote's queue moved."""
    now, changed = timezone.now(), 0
    started, moved = Q(), []
    for job_id, claim, has_started, position in notes:
        if has_started:
            started |= Q(pk=job_id, claims=claim)
        else:
            moved.append((job_id, claim, position))
    if started:
        changed += Job.objects.filter(started, status=S.RUNNING, remote_started_at__isnull=True).update(
            remote_started_at=now, queue_position=None)
    if moved:
        which = Q()
        for job_id, claim, _position in moved:
            which |= Q(pk=job_id, claims=claim)
        changed += Job.objects.filter(which, status=S.RUNNING, remote_started_at__isnull=True).update(
            queue_position=Case(*[When(pk=job_id, then=Value(position)) for job_id, _c, position in moved],
                                default=F("queue_position"), output_field=PositiveIntegerField()))
    return changed


def job_result_fetch_failed(*, job_id: int, claim: int, next_check_at) -> int:
    """A completed request's result could not be fetched: counts it, and when to look again."""
    _running(job_id, claim).update(result_fetch_failures=F("result_fetch_failures") + 1, next_check_at=next_check_at,
                                   heartbeat_at=timezone.now())
    return Job.objects.values_list("result_fetch_failures", flat=True).get(pk=job_id)


# --- paid results not yet stored (jobs/pending_results.py) -----------------------------------


def job_keep_result(*, job_id: int, claim: int, pending: dict, cost: Decimal | None, message: str) -> bool:
    """running → storing: the clip is paid (its cost is added now) and kept until it can be stored."""
    return _running(job_id, claim).update(
        status=S.STORING, pending_result=pending, cost_usd=Coalesce(F("cost_usd"), Value(Decimal("0"))) + (cost or 0),
        progress=1.0, error_code="storage_error", error_message=message[:2000], heartbeat_at=timezone.now(),
        dispatch_token="", queue_position=None) == 1


def job_kept_result_retry_later(*, job_id: int, pending: dict) -> bool:
    return Job.objects.filter(pk=job_id, status=S.STORING).update(
        pending_result=pending, heartbeat_at=timezone.now()) == 1


def job_store_kept(*, job_id: int, **fields) -> bool:
    """storing → succeeded, once the kept clip is stored. Its cost was counted when it was kept."""
    return Job.objects.filter(pk=job_id, status=S.STORING).update(
        status=S.SUCCEEDED, pending_result={}, progress=1.0, finished_at=timezone.now(), error_code="",
        error_message="", **fields) == 1


def job_kept_result_lost(*, job_id: int, message: str) -> bool:
    """storing → failed: neither the spool nor the provider has the clip any more. Paid for, so all waste."""
    return Job.objects.filter(pk=job_id, status=S.STORING).update(
        status=S.FAILED, pending_result={}, error_code="result_lost", error_message=message[:2000],
        finished_at=timezone.now(), wasted_usd=Coalesce(F("cost_usd"), Value(Decimal("0")))) == 1


def job_kept_result_abandoned(*, job_id: int, cost: Decimal) -> bool:
    """A job cancelled while its paid clip waited to be stored: the clip is dropped, its cost is waste."""
    return Job.objects.filter(pk=job_id, status=S.CANCELLED).exclude(pending_result={}).update(
        pending_result={}, wasted_usd=F("wasted_usd") + cost) == 1


# --- fallback from the GPU to fal -------------------------------------------------------------


def _falls_back_after_attempts(job_id: int) -> bool:
    job = Job.objects.select_related("batch").only(
        "provider", "attempts", "batch__fallback_policy", "batch__fallback_after").get(pk=job_id)
    batch = job.batch
    return (job.provider == "vastai" and batch.fallback_policy == BatchRun.Fallback.ATTEMPTS
            and job.attempts >= (batch.fallback_after or 1))


def _fallback_fields(reason: str) -> dict:
    return dict(provider="fal", status=S.QUEUED, attempts=0, progress=0.0, fallback_from="vastai",
                fallback_reason=reason[:300], instance=None, external_id="", provider_ref={}, dispatch_token="",
                heartbeat_at=None, error_code="", error_message="")


def job_fall_back(*, job_id: int, from_states, reason: str, claim: int | None = None) -> bool:
    """Moves a vastai job to fal with fresh attempts, recording why. The caps still apply there."""
    jobs = Job.objects.filter(pk=job_id, provider="vastai", status__in=from_states)
    if claim is not None:
        jobs = jobs.filter(claims=claim)
    moved = jobs.update(**_fallback_fields(reason))
    if moved:
        _enqueue_pump("fal")
    return moved == 1


def jobs_fall_back(*, job_ids, reason: str) -> int:
    """Moves waiting vastai jobs to fal in one update (the deadline planner's choice); a job that started on
    the GPU or was cancelled meanwhile is left alone."""
    moved = Job.objects.filter(pk__in=list(job_ids), provider="vastai",
                               status__in=(S.QUEUED, S.WAITING_FOR_GPU)).update(**_fallback_fields(reason))
    if moved:
        _enqueue_pump("fal")
    return moved


def jobs_fall_back_while_gpu_unavailable(*, provider_name: str) -> int:
    """Batches with the `unrecoverable` policy leave the GPU once it has been unavailable long enough."""
    from gpu_instances.selectors import gpu_rental_blocked_until
    from jobs.selectors import gpu_down_since

    since = gpu_down_since() if provider_name == "vastai" else None
    if since is None:
        return 0
    now = timezone.now()
    down_minutes = (now - since).total_seconds() / 60
    reason = f"the GPU has been unavailable for {down_minutes:.0f} min"
    # While vast's search quota blocks renting, the outage is known to last at least until the reset: a batch
    # that would wait no longer than that leaves now rather than after its full wait.
    outage_minutes = down_minutes
    blocked_until = gpu_rental_blocked_until()
    if blocked_until:
        outage_minutes += (blocked_until - now).total_seconds() / 60
        reason += (f", and vast.ai's daily search quota blocks renting another until "
                   f"{blocked_until:%Y-%m-%d %H:%M} UTC")
    waiting = (S.QUEUED, S.WAITING_FOR_GPU)
    due = Job.objects.filter(provider="vastai", status__in=waiting,
                             batch__fallback_policy=BatchRun.Fallback.UNRECOVERABLE,
                             batch__fallback_after__lte=outage_minutes)
    moved = due.update(**_fallback_fields(reason))
    if moved:
        _enqueue_pump("fal")
    return moved


def jobs_requeue_lost(*, jobs, code: str, message: str) -> int:
    """Running jobs (id, claim) whose worker or instance is gone: back to the queue, or failed when out of
    attempts. The claim seen when they were found must still hold, so a job that moved on is left alone."""
    return sum(1 for job_id, claim in jobs
               if job_fail(job_id=job_id, code=code, message=message, permanent=False, claim=claim))


def jobs_requeue_for_instance(*, instance_id: int, reason: str) -> int:
    """The instance these jobs ran on is gone: back to the queue. The attempt counts (or the job fails when
    out of attempts) only for a job the GPU had started: the one generating may be what killed it, the
    ones waiting behind it cannot be, and a run of dying machines must not use up their attempts."""
    jobs = list(Job.objects.filter(status=S.RUNNING, instance_id=instance_id)
                .values_list("pk", "claims", "remote_started_at"))
    message = f"the GPU instance was lost: {reason}"
    released = sum(1 for pk, claim, started in jobs if not started and job_release(
        job_id=pk, claim=claim, reason=f"{message} (before the GPU started it)"))
    return released + jobs_requeue_lost(jobs=[(pk, claim) for pk, claim, started in jobs if started],
                                        code="instance_lost", message=message)


def job_cancel(*, job: Job) -> bool:
    updated = Job.objects.filter(pk=job.pk, status__in=Job.UNFINISHED).update(
        status=S.CANCELLED, finished_at=timezone.now(), dispatch_token="")
    if updated and job.external_id:
        _cancel_remote_on_commit([(job.provider, job.provider_ref)])
    return updated == 1


def _cancel_remote_on_commit(requests) -> None:
    from jobs.tasks import cancel_remote as cancel_remote_task

    transaction.on_commit(lambda: [cancel_remote_task.enqueue(provider, ref) for provider, ref in requests])


def _retry_status():
    """Back to the queue, or to `fetching` for an item by URL whose image was never had."""
    return Case(When(input_image="", then=Value(S.FETCHING)), default=Value(S.QUEUED))


def _enqueue_after_retry(provider: str) -> None:
    from jobs.fetching import fetch_enqueue

    _enqueue_pump(provider)
    transaction.on_commit(fetch_enqueue)


def job_retry(*, job: Job) -> bool:
    """A user's retry of a failed or cancelled job: a fresh set of attempts."""
    updated = Job.objects.filter(pk=job.pk, status__in=(S.FAILED, S.CANCELLED)).update(
        status=_retry_status(), attempts=0, progress=0.0, error_code="", error_message="", finished_at=None,
        started_at=None, heartbeat_at=None, external_id="", provider_ref={}, instance=None)
    if updated:
        batch_reopened(batch_id=job.batch_id, job_ids=[job.pk])
        _enqueue_after_retry(job.provider)
    return updated == 1


def batch_cancel(*, batch: BatchRun) -> int:
    with transaction.atomic():
        BatchRun.objects.filter(pk=batch.pk).update(cancel_requested_at=timezone.now())
        remote = list(batch.jobs.filter(status=S.RUNNING).exclude(external_id="").values_list("provider",
                                                                                               "provider_ref"))
        cancelled = batch.jobs.filter(status__in=Job.UNFINISHED).update(
            status=S.CANCELLED, finished_at=timezone.now(), dispatch_token="")
        if remote:
            _cancel_remote_on_commit(remote)
    return cancelled


def batch_retry_failed(*, batch: BatchRun) -> int:
    with transaction.atomic():
        count = batch.jobs.filter(status=S.FAILED).update(
            status=_retry_status(), attempts=0, progress=0.0, error_code="", error_message="", finished_at=None,
            started_at=None, heartbeat_at=None, external_id="", provider_ref={}, instance=None)
        if count:
            batch_reopened(batch_id=batch.pk)
            _enqueue_after_retry(batch.provider)
    return count


def batch_set_budget(*, batch: BatchRun, budget_usd) -> BatchRun:
    """Sets (or, with None, removes) the batch's cap. The pump re-checks the caps at once: jobs that now
    fit resume, and a lowered cap pauses what no longer fits."""
    if budget_usd is not None and budget_usd < 0:
        raise ApplicationError("budget_usd must not be negative")
    with transaction.atomic():
        BatchRun.objects.filter(pk=batch.pk).update(budget_usd=budget_usd)
        for provider in set(batch.jobs.filter(status__in=Job.UNFINISHED).values_list("provider", flat=True)):
            _enqueue_pump(provider)
    batch.refresh_from_db()
    return batch


def batch_set_deadline(*, batch: BatchRun, deadline) -> BatchRun:
    """Sets (or, with None, removes) the batch's deadline; the vast pump's next pass plans for it. Jobs
    already moved to fal stay there (they may be paid for)."""
    with transaction.atomic():
        BatchRun.objects.filter(pk=batch.pk).update(deadline=deadline, deadline_note="")
        if batch.jobs.filter(provider="vastai", status__in=Job.UNFINISHED).exists():
            _enqueue_pump("vastai")
    batch.refresh_from_db()
    return batch


# --- stale-job sweep ----------------------------------------------------------------------


def jobs_sweep_stale(*, now=None, provider_name: str | None = None) -> int:
    """Running jobs whose worker died: its process is gone from this machine (seen at once), or its
    heartbeat stopped for GENHUB_STALE_JOB_SECONDS (a few missed beats; a worker on another machine).
    Back to the queue; the attempt counts only if the work had started (below).

    - A job dispatched but never taken by a worker (its `run_job` task was lost with a killed cluster)
      goes back without using an attempt; if the old task is delivered later, its token no longer
      matches and it does nothing.
    - Jobs a polled provider tracks by request id are left alone: the poller resumes them from the
      stored id, and resubmitting would pay for the same clip twice. Those it is still submitting are
      left alone while their pump's lease is alive (the pump beats for them every pass).
    """
    from genhub.models import Lease
    from providers.registry import get_provider, provider_names

    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.GENHUB_STALE_JOB_SECONDS)
    names = [provider_name] if provider_name else list(provider_names())
    polled = [name for name in names if get_provider(name).polled]
    live_pumps = set(Lease.objects.filter(name__in=[f"pump:{name}" for name in polled], expires_at__gte=now)
                     .exclude(holder="").values_list("name", flat=True))
    running = Job.objects.filter(status=S.RUNNING, provider__in=names)
    orphaned = [pk for pk, worker in running.exclude(worker="").values_list("pk", "worker") if is_gone(worker)]
    stale = running.filter(Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True) | Q(pk__in=orphaned))
    stale = stale.exclude(Q(provider__in=polled) & ~Q(external_id=""))
    stale = stale.exclude(provider__in=[name for name in polled if f"pump:{name}" in live_pumps])
    jobs = list(stale.values_list("pk", "claims", "dispatch_token", "remote_started_at", "provider", "provider_ref"))
    if not jobs:
        return 0
    log.warning("requeueing %d stale job(s): %s", len(jobs), [job[0] for job in jobs])
    # The GPU may still be generating for a worker that died: stop it, or it would finish a clip nobody
    # collects ahead of the attempt that replaces it. Only for a worker certainly gone: a live one (late
    # beats) stops its own generation when it sees the job taken from it, and may reuse that session.
    _cancel_remote_on_commit([(provider, ref) for pk, *_, provider, ref in jobs
                              if pk in orphaned and ref and provider not in polled])
    # The clip may have been finished before it was interrupted (the worker died while collecting it, or
    # the cluster was down for longer than the generation): the next attempt looks for it first. It may
    # interrupt the session of a worker certainly gone, not that of one that may live and reuse it.
    for pk, claim, *_, provider, ref in jobs:
        if ref and provider not in polled:
            lost = ref if pk in orphaned else {key: value for key, value in ref.items() if key != "session_id"}
            Job.objects.filter(pk=pk, claims=claim).update(lost_work=lost)
    # A job whose work never started (its task never ran, or it waited in SwarmUI's queue) is handed back
    # without using an attempt; one that was generating counts it, as that work may be what killed the
    # worker. Not a polled provider's: a submit whose answer was lost may have been billed.
    unstarted = {pk for pk, _, token, started, provider, _ in jobs
                 if token or (not started and provider not in polled)}
    released = sum(1 for pk, claim, *_ in jobs if pk in unstarted and job_release(
        job_id=pk, claim=claim, reason="its worker was lost before the work started (the cluster stopped)"))
    return released + jobs_requeue_lost(
        jobs=[(pk, claim) for pk, claim, *_ in jobs if pk not in unstarted], code="worker_lost",
        message=f"the worker was lost (its process ended, or it sent no heartbeat for "
                f"{settings.GENHUB_STALE_JOB_SECONDS:g}s)")
