"""Budget caps applied to the queue: jobs that would overspend wait as `paused`, and resume when they fit."""

import logging
from collections import defaultdict

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.db.models.expressions import RawSQL

from jobs.models import BatchRun, Job
from jobs.spend import Gate

log = logging.getLogger(__name__)
S = Job.Status
WAITING = (S.QUEUED, S.WAITING_FOR_GPU, S.PAUSED)


def caps_in_force(provider_name: str) -> bool:
    if settings.GENHUB_MONTHLY_BUDGET_USD is not None:
        return True
    return Job.objects.filter(provider=provider_name, status__in=WAITING, batch__budget_usd__isnull=False).exists()


def _ids(ids: list[int]) -> Q:
    """`id IN (…)` as one array parameter on PostgreSQL: a 10,000-job queue must not become 10,000
    bind parameters (PostgreSQL takes at most 65,535)."""
    if connection.vendor == "postgresql":
        return Q(pk__in=RawSQL("SELECT unnest(%s::bigint[])", (ids,)))
    return Q(pk__in=ids)


def apply_caps(*, provider_name: str) -> tuple[int, int]:
    """Walks the provider's waiting jobs in queue order: what fits under the caps stays (or goes back)
    in the queue, the rest is paused with the reason. Running jobs are never touched: they are paid for.

    A bounded number of queries whatever the queue's length: the gate's figures (a few, plus two per
    capped batch), one read of the waiting jobs' ids, statuses, batches and parameters (no model
    objects), the walk in memory (each distinct parameter set priced once), then one UPDATE per
    distinct pause reason (one per capped batch, one for the month) and one for everything resumed.
    Returns (paused, resumed).
    """
    if not caps_in_force(provider_name):
        # Nothing caps anything any more (a cap was removed): whatever was paused may go.
        resumed = Job.objects.filter(provider=provider_name, status=S.PAUSED).update(status=S.QUEUED, paused_reason="")
        return 0, resumed
    gate = Gate.open()
    waiting = (Job.objects.filter(provider=provider_name, status__in=WAITING)
               .order_by("batch_id", "position", "id")
               .values_list("id", "status", "batch_id", "batch__budget_usd", "params"))
    to_pause: dict[str, list[int]] = defaultdict(list)
    to_resume: list[int] = []
    for job_id, status, batch_id, batch_budget, params in waiting:
        reason = gate.admit_values(provider=provider_name, batch_id=batch_id, params=params,
                                   batch=BatchRun(pk=batch_id, budget_usd=batch_budget))
        if reason and status != S.PAUSED:
            to_pause[reason].append(job_id)
        elif not reason and status == S.PAUSED:
            to_resume.append(job_id)
    paused = resumed = 0
    for reason, ids in to_pause.items():
        # The status it was read in must still hold (compare-and-set): a job claimed meanwhile is left alone.
        paused += Job.objects.filter(_ids(ids), status__in=(S.QUEUED, S.WAITING_FOR_GPU)).update(
            status=S.PAUSED, paused_reason=reason)
    if to_resume:
        resumed = Job.objects.filter(_ids(to_resume), status=S.PAUSED).update(status=S.QUEUED, paused_reason="")
    if paused or resumed:
        log.info("%s: %d job(s) paused by a budget cap, %d resumed", provider_name, paused, resumed)
    return paused, resumed


def gpu_demand() -> int:
    """vastai jobs that need the GPU now or soon and that the caps allow: the orchestrator's reason
    to rent. The caps are applied first, so work that is about to be paused never rents a GPU."""
    apply_caps(provider_name="vastai")
    # A job in `storing` is done with the GPU: its clip only waits for the disk.
    return Job.objects.filter(provider="vastai", status__in=Job.ACTIVE).exclude(status=S.STORING).count()
