"""What a batch tells its owner's webhook: "batch finished" (and, if asked, "job finished"), durably.

An event becomes a `WebhookDelivery` row in the same transaction that marks it as notified
(compare-and-set on `finished_notified_at` / `notified_at`), so it is queued exactly once however many
pumps and schedules look. Sending happens in its own task, never in a pump: a slow receiver delays
only its own delivery. A failed delivery is tried again by the schedule with backoff, up to
GENHUB_ALERT_WEBHOOK_MAX_ATTEMPTS, and keeps its last error for the admin.
"""

import json
import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from gpu_instances import exposure
from jobs import selectors
from jobs.models import BatchRun, Job, WebhookDelivery
from jobs.webhooks import post_signed, redelivery_delay, url_problem
from providers.errors import ProviderError

log = logging.getLogger(__name__)
S = Job.Status
E = WebhookDelivery.Event
# One pass queues at most this many job events (the rest come on the next pass): bounded work per pump pass.
JOB_EVENTS_PER_PASS = 500


def _job_payload(job: Job, owner) -> dict:
    instance = job.instance if job.instance_id else None
    return {
        "id": str(job.uuid), "status": job.status, "input_name": job.input_name, "seed": job.seed,
        "provider": job.provider, "fallback_from": job.fallback_from or None,
        "error": ({"code": job.error_code, "message": exposure.shown(job.error_message, owner, instance)}
                  if job.error_code else None),
        "cost_usd": str(job.cost_usd) if job.cost_usd is not None else None,
        # Paths on this genhub; fetch them with the same token as the API.
        "output_url": reverse("job-video", args=[job.uuid]) if job.output_video else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def _batch_payload(batch: BatchRun) -> dict:
    batch = selectors.batch_get(user=batch.owner, batch_uuid=batch.uuid)
    jobs = list(Job.objects.filter(batch=batch).select_related("instance").order_by("position", "id"))
    return {
        "event": E.BATCH_FINISHED, "batch": {
            "id": str(batch.uuid), "name": batch.name, "status": selectors.batch_status(batch),
            "counts": selectors.batch_counts(batch), "total": batch.n_total,
            "cost_usd": str(selectors.batch_cost(batch)), "wasted_usd": str(selectors.batch_waste(batch)),
            "deadline": batch.deadline.isoformat() if batch.deadline else None,
            "url": reverse("batch-detail", args=[batch.uuid]),
        },
        "jobs": [_job_payload(job, batch.owner) for job in jobs],
        "sent_for": timezone.now().isoformat(),
    }


def _enqueue(delivery_ids: list[int]) -> None:
    from jobs.tasks import deliver_webhook as deliver_task

    transaction.on_commit(lambda: [deliver_task.enqueue(pk) for pk in delivery_ids])


def events_collect() -> int:
    """Queues a delivery for every finished batch (and finished job, when asked) not yet notified. Cheap
    when there is nothing to say: called from every pump pass and the schedule. Returns deliveries queued."""
    queued = []
    with_hooks = BatchRun.objects.exclude(webhook_url="").filter(finished_notified_at__isnull=True)
    for batch in with_hooks.filter(webhook_events=BatchRun.WebhookEvents.BATCH_AND_JOBS).select_related("owner"):
        jobs = list(batch.jobs.filter(status__in=Job.TERMINAL, notified_at__isnull=True)
                    .select_related("instance")[:JOB_EVENTS_PER_PASS])
        for job in jobs:
            with transaction.atomic():
                if not Job.objects.filter(pk=job.pk, notified_at__isnull=True).update(notified_at=timezone.now()):
                    continue
                body = {"event": E.JOB_FINISHED, "batch": str(batch.uuid), "job": _job_payload(job, batch.owner),
                        "sent_for": timezone.now().isoformat()}
                delivery = WebhookDelivery.objects.create(batch=batch, job=job, event=E.JOB_FINISHED,
                                                          body=json.dumps(body, sort_keys=True))
                queued.append(delivery.pk)
                _enqueue([delivery.pk])
    finished = with_hooks.exclude(jobs__status__in=Job.UNFINISHED).filter(jobs__isnull=False).distinct()
    for batch in finished.select_related("owner"):
        if batch.wants_job_events and batch.jobs.filter(status__in=Job.TERMINAL, notified_at__isnull=True).exists():
            continue  # its job events first, so "batch finished" is the last word
        with transaction.atomic():
            if not BatchRun.objects.filter(pk=batch.pk, finished_notified_at__isnull=True).update(
                    finished_notified_at=timezone.now()):
                continue
            delivery = WebhookDelivery.objects.create(batch=batch, event=E.BATCH_FINISHED,
                                                      body=json.dumps(_batch_payload(batch), sort_keys=True))
            queued.append(delivery.pk)
            _enqueue([delivery.pk])
    return len(queued)


def batch_reopened(*, batch_id: int, job_ids=None) -> None:
    """A retry made a finished batch (or job) unfinished again: it will be notified again when it ends."""
    BatchRun.objects.filter(pk=batch_id).update(finished_notified_at=None)
    jobs = Job.objects.filter(batch_id=batch_id)
    if job_ids is not None:
        jobs = jobs.filter(pk__in=list(job_ids))
    jobs.filter(status__in=Job.UNFINISHED).update(notified_at=None)


def delivery_send(*, delivery_id: int) -> bool:
    """One attempt at one delivery. True when it is delivered (now or before)."""
    delivery = WebhookDelivery.objects.select_related("batch").get(pk=delivery_id)
    if delivery.delivered_at:
        return True
    batch = delivery.batch
    if delivery.attempts >= settings.GENHUB_ALERT_WEBHOOK_MAX_ATTEMPTS or not batch.webhook_url:
        return False
    # Checked again at every send: the name may resolve elsewhere than when the batch was created.
    problem = url_problem(batch.webhook_url)
    try:
        if problem:
            raise ProviderError(f"webhook URL refused: {problem}", code="webhook_refused")
        post_signed(url=batch.webhook_url, body=delivery.body.encode(), secret=batch.webhook_secret,
                    service="batch webhook", headers={"X-Genhub-Event": delivery.event,
                                                      "X-Genhub-Delivery": str(delivery.uuid)})
    except ProviderError as exc:
        attempts = delivery.attempts + 1
        WebhookDelivery.objects.filter(pk=delivery.pk, delivered_at__isnull=True).update(
            attempts=attempts, last_error=exc.message[:1000],
            next_attempt_at=timezone.now() + redelivery_delay(attempts))
        log.warning("batch %s: webhook delivery %s failed (attempt %d): %s", batch.uuid, delivery.uuid, attempts,
                    exc.message)
        return False
    WebhookDelivery.objects.filter(pk=delivery.pk).update(delivered_at=timezone.now(), attempts=delivery.attempts + 1,
                                                          last_error="", next_attempt_at=None)
    return True


def deliveries_retry_due() -> int:
    """The schedule's part: queue what was never sent (a lost task) or failed and is due again."""
    now = timezone.now()
    due = WebhookDelivery.objects.filter(delivered_at__isnull=True,
                                         attempts__lt=settings.GENHUB_ALERT_WEBHOOK_MAX_ATTEMPTS).filter(
        Q(next_attempt_at__lte=now) | Q(next_attempt_at__isnull=True, created_at__lte=now - redelivery_delay(1)))
    ids = list(due.values_list("pk", flat=True)[:JOB_EVENTS_PER_PASS])
    if ids:
        # Pushed forward so the next tick does not queue them again while these tasks wait to run.
        WebhookDelivery.objects.filter(pk__in=ids).update(next_attempt_at=now + redelivery_delay(1))
        _enqueue(ids)
    return len(ids)


def webhooks_tick() -> tuple[int, int]:
    """Scheduled every minute: events no pump pass saw (a batch cancelled with nothing running) and re-deliveries."""
    return events_collect(), deliveries_retry_due()
