"""Budget caps applied to the queue: jobs that would overspend wait as `paused`, and resume when they fit."""

import logging

from django.conf import settings

from jobs.models import Job
from jobs.spend import Gate

log = logging.getLogger(__name__)
S = Job.Status
WAITING = (S.QUEUED, S.WAITING_FOR_GPU, S.PAUSED)


def caps_in_force(provider_name: str) -> bool:
    if settings.GENHUB_MONTHLY_BUDGET_USD is not None:
        return True
    return Job.objects.filter(provider=provider_name, status__in=WAITING, batch__budget_usd__isnull=False).exists()


def apply_caps(*, provider_name: str) -> tuple[int, int]:
    """Walks the provider's waiting jobs in queue order: what fits under the caps stays (or goes back)
    in the queue, the rest is paused with the reason. Running jobs are never touched: they are paid for.

    Returns (paused, resumed).
    """
    if not caps_in_force(provider_name):
        # Nothing caps anything any more (a cap was removed): whatever was paused may go.
        resumed = Job.objects.filter(provider=provider_name, status=S.PAUSED).update(status=S.QUEUED, paused_reason="")
        return 0, resumed
    gate = Gate.open()
    paused = resumed = 0
    waiting = (Job.objects.filter(provider=provider_name, status__in=WAITING).select_related("batch")
               .only("id", "status", "provider", "params", "batch__id", "batch__budget_usd")
               .order_by("batch_id", "position", "id"))
    for job in waiting:
        reason = gate.admit(job)
        if reason and job.status != S.PAUSED:
            paused += Job.objects.filter(pk=job.pk, status=job.status).update(status=S.PAUSED, paused_reason=reason)
        elif not reason and job.status == S.PAUSED:
            resumed += Job.objects.filter(pk=job.pk, status=S.PAUSED).update(status=S.QUEUED, paused_reason="")
    if paused or resumed:
        log.info("%s: %d job(s) paused by a budget cap, %d resumed", provider_name, paused, resumed)
    return paused, resumed


def gpu_demand() -> int:
    """vastai jobs that need the GPU now or soon and that the caps allow: the orchestrator's reason
    to rent. The caps are applied first, so work that is about to be paused never rents a GPU."""
    apply_caps(provider_name="vastai")
    # A job in `storing` is done with the GPU: its clip only waits for the disk.
    return Job.objects.filter(provider="vastai", status__in=Job.ACTIVE).exclude(status=S.STORING).count()
