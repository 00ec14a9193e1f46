"""Alerts: raised and resolved by a scheduled check, shown in the app and the admin, and POSTed
(signed, with a timeout and retries) to a webhook when one is configured."""

import json
import logging
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from gpu_instances.selectors import vast_search_block
from jobs.models import Alert, BatchRun, Job
from jobs.selectors import gpu_down_since
from jobs.spend import batch_spend, monthly_spend
from jobs.storage_health import storage_problem
from jobs.webhooks import post_signed
from providers.errors import ProviderError

log = logging.getLogger(__name__)
K = Alert.Kind
WARNING_SHARE = Decimal("0.8")


def alerts_check() -> list[str]:
    """Raises alerts for the conditions that hold and resolves those that no longer do. Returns the open keys."""
    wanted: dict[str, tuple] = {}  # key → (kind, message, batch)

    since = gpu_down_since()
    waiting = Job.objects.filter(provider="vastai", status__in=(Job.Status.QUEUED, Job.Status.WAITING_FOR_GPU))
    if since:
        down = (timezone.now() - since).total_seconds() / 60
        if down >= settings.GENHUB_ALERT_INSTANCE_DOWN_MINUTES:
            wanted["instance_down"] = (K.INSTANCE_DOWN, f"no GPU instance has been ready for {down:.0f} min while "
                                                        f"{waiting.count()} vastai job(s) wait", None)

    block = vast_search_block()
    if block:
        until, reason = block
        wanted["vast_search_quota"] = (
            K.VAST_SEARCH_QUOTA, f"vast.ai offer searches are paused until {until:%Y-%m-%d %H:%M} UTC: {reason}. "
                                 f"No new GPU can be rented before then ({waiting.count()} vastai job(s) wait; "
                                 f"batches with fallback=unrecoverable move to fal)", None)

    cap = settings.GENHUB_MONTHLY_BUDGET_USD
    if cap is not None:
        _budget_alerts(wanted, "monthly", "the monthly budget", monthly_spend(), Decimal(cap), None)
    for batch in BatchRun.objects.filter(budget_usd__isnull=False, jobs__status__in=Job.UNFINISHED).distinct():
        _budget_alerts(wanted, f"batch:{batch.pk}", f"batch “{batch}”", batch_spend(batch), batch.budget_usd, batch)

    stalled_before = timezone.now() - timedelta(minutes=settings.GENHUB_ALERT_STALLED_MINUTES)
    active_batches = BatchRun.objects.filter(jobs__status__in=Job.ACTIVE).distinct().annotate(
        last_beat=Max("jobs__heartbeat_at"), last_end=Max("jobs__finished_at"))
    for batch in active_batches:
        last = max(filter(None, (batch.created_at, batch.last_beat, batch.last_end)))
        if last < stalled_before:
            wanted[f"batch:{batch.pk}:stalled"] = (
                K.BATCH_STALLED, f"batch “{batch}” has made no progress for "
                                 f"{(timezone.now() - last).total_seconds() / 60:.0f} min", batch)

    problem = storage_problem()
    if problem:
        wanted[STORAGE_KEY] = (K.STORAGE_FAILING, problem, None)

    open_alerts = {alert.key: alert for alert in Alert.objects.filter(resolved_at__isnull=True)}
    for key, alert in open_alerts.items():
        if key not in wanted:
            Alert.objects.filter(pk=alert.pk).update(resolved_at=timezone.now())
    for key, (kind, message, batch) in wanted.items():
        if key not in open_alerts:
            _raise(key=key, kind=kind, message=message, batch=batch)
    _retry_undelivered()
    return sorted(wanted)


STORAGE_KEY = "storage_failing"


def storage_failing_raise() -> None:
    """Raised the moment a paid clip cannot be stored (not a minute later): dispatch is held from now."""
    problem = storage_problem()
    if problem:
        _raise(key=STORAGE_KEY, kind=K.STORAGE_FAILING, message=problem, batch=None)


def storage_failing_resolve() -> None:
    """Resolved as soon as the kept clips are stored and the disk has room again."""
    if storage_problem() is None:
        Alert.objects.filter(key=STORAGE_KEY, resolved_at__isnull=True).update(resolved_at=timezone.now())


def _budget_alerts(wanted, key, label, spent: Decimal, cap: Decimal, batch):
    if cap <= 0 or spent < cap * WARNING_SHARE:
        return
    if spent >= cap:
        wanted[f"{key}:budget_100"] = (K.BUDGET_REACHED, f"{label}: ${spent} spent of ${cap}; new work is paused",
                                       batch)
    else:
        wanted[f"{key}:budget_80"] = (K.BUDGET_WARNING, f"{label}: ${spent} spent of ${cap} ({spent / cap:.0%})",
                                      batch)


def _raise(*, key: str, kind: str, message: str, batch) -> None:
    try:
        with transaction.atomic():
            alert = Alert.objects.create(key=key, kind=kind, message=message, batch=batch)
    except IntegrityError:
        return  # raised concurrently by another check: one open alert per key
    log.warning("alert %s: %s", kind, message)
    if settings.GENHUB_ALERT_WEBHOOK_URL:
        from jobs.tasks import deliver_alert as deliver_alert_task

        transaction.on_commit(lambda: deliver_alert_task.enqueue(alert.pk))


def _retry_undelivered() -> None:
    """Deliveries that failed are tried again on later checks, up to the attempt limit."""
    if not settings.GENHUB_ALERT_WEBHOOK_URL:
        return
    from jobs.tasks import deliver_alert as deliver_alert_task

    pending = Alert.objects.filter(delivered_at__isnull=True, delivery_attempts__gt=0,
                                   delivery_attempts__lt=settings.GENHUB_ALERT_WEBHOOK_MAX_ATTEMPTS)
    for alert_id in pending.values_list("pk", flat=True):
        deliver_alert_task.enqueue(alert_id)


def alert_deliver(*, alert_id: int) -> bool:
    alert = Alert.objects.select_related("batch").get(pk=alert_id)
    if alert.delivered_at or not settings.GENHUB_ALERT_WEBHOOK_URL:
        return bool(alert.delivered_at)
    body = json.dumps({
        "id": alert.pk, "kind": alert.kind, "key": alert.key, "message": alert.message,
        "batch": str(alert.batch.uuid) if alert.batch else None, "created_at": alert.created_at.isoformat(),
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
    }, sort_keys=True).encode()
    try:
        post_signed(url=settings.GENHUB_ALERT_WEBHOOK_URL, body=body, secret=settings.GENHUB_ALERT_WEBHOOK_SECRET,
                    service="alert webhook")
    except ProviderError as exc:
        Alert.objects.filter(pk=alert.pk).update(delivery_attempts=alert.delivery_attempts + 1,
                                                 delivery_error=exc.message[:1000])
        return False
    Alert.objects.filter(pk=alert.pk).update(delivered_at=timezone.now(), delivery_attempts=alert.delivery_attempts + 1,
                                             delivery_error="")
    return True
