"""Reads for pages and the API. Every query is scoped to what the user may see."""

from dataclasses import dataclass
from decimal import Decimal

from django.db import connection
from django.db.models import Count, F, Max, Q, QuerySet, Sum
from django.shortcuts import get_object_or_404

from jobs.models import Alert, BatchCounts, BatchRun, Job

S = Job.Status
# Read from the maintained counts (BatchCounts, kept by triggers), never by adding up the jobs: the batch
# list and a 10,000-job batch's page cost the same as an empty one.
COUNT_FIELDS = {f"n_{status}": F(f"tally__n_{status}") for status in S.values}


def _visible(queryset: QuerySet, user) -> QuerySet:
    return queryset if user.is_staff else queryset.filter(owner=user)


def batch_list(*, user) -> QuerySet:
    """Batches with their per-status counts and cost so far, in one query that joins only their counts row."""
    return _visible(BatchRun.objects.all(), user).annotate(
        n_total=F("tally__n_total"), cost_so_far=F("tally__cost_usd"), wasted=F("tally__wasted_usd"), **COUNT_FIELDS
    ).order_by("-created_at", "-id")


def batch_get(*, user, batch_uuid) -> BatchRun:
    """One batch as batch_list has it, with its whole counts row (`batch.tally`, the same join): its page
    and the API read the ETA's and the planner's counters from it."""
    return get_object_or_404(batch_list(user=user).select_related("tally"), uuid=batch_uuid)


def batch_get_owned(*, user, batch_uuid) -> BatchRun:
    """The user's own batch (staff included: changing someone else's batch's items is not theirs to do)."""
    return get_object_or_404(BatchRun, uuid=batch_uuid, owner=user)


def batch_jobs(*, batch: BatchRun, status: str | None = None) -> QuerySet:
    jobs = batch.jobs.select_related("instance").order_by("position", "id")
    return jobs.filter(status=status) if status else jobs


def batch_running_progress(batch: BatchRun) -> float:
    """The summed progress of the batch's jobs at work (at most the providers' in-flight limits)."""
    running = batch.jobs.filter(status__in=(S.RUNNING, S.STORING)).aggregate(total=Sum("progress"))["total"]
    return float(running or 0.0)


def batch_next_on_gpu(batch: BatchRun) -> int:
    """How many of the batch's running jobs wait inside SwarmUI behind another (see job_phases)."""
    if batch.provider != "vastai" or not batch_counts(batch)[S.RUNNING]:
        return 0
    phases = job_phases(batch.jobs.filter(status=S.RUNNING))
    return sum(1 for phase in phases.values() if phase == NEXT_ON_GPU)


def job_get(*, user, job_uuid) -> Job:
    return get_object_or_404(_visible(Job.objects.select_related("batch", "instance"), user), uuid=job_uuid)


def batch_tally(batch: BatchRun) -> BatchCounts:
    """The batch's maintained counts: the row batch_get joined, else read now (and then kept on `batch`,
    like any relation: a batch object held while its jobs change reads it again after refresh_from_db)."""
    return batch.tally


def batch_deadline_moved(batch: BatchRun) -> int:
    """How many of the batch's jobs the deadline planner moved to fal (maintained: no scan of its jobs)."""
    return batch_tally(batch).n_deadline_moved


def batch_counts(batch: BatchRun) -> dict:
    return {status: getattr(batch, f"n_{status}", 0) for status in S.values}


def batch_status(batch: BatchRun) -> str:
    """Derived from the jobs: the batch is as far along as its least finished job."""
    counts = batch_counts(batch)
    if counts[S.RUNNING] or counts[S.STORING]:
        return "running"
    if counts[S.PAUSED] and not (counts[S.QUEUED] or counts[S.WAITING_FOR_GPU] or counts[S.FETCHING]):
        return S.PAUSED
    if counts[S.QUEUED] or counts[S.WAITING_FOR_GPU] or counts[S.FETCHING]:
        started = counts[S.SUCCEEDED] + counts[S.FAILED] + counts[S.CANCELLED]
        if started:
            return "running"
        if counts[S.FETCHING] and not (counts[S.QUEUED] or counts[S.WAITING_FOR_GPU]):
            return S.FETCHING  # nothing can start before its image is here
        return S.WAITING_FOR_GPU if counts[S.WAITING_FOR_GPU] and not counts[S.QUEUED] else S.QUEUED
    if counts[S.FAILED]:
        return "completed_with_failures" if counts[S.SUCCEEDED] else S.FAILED
    if counts[S.CANCELLED]:
        return S.CANCELLED
    return S.SUCCEEDED


def batch_progress(batch: BatchRun, running: float = 0.0) -> float:
    """Share of the work done: finished jobs count whole, running ones by their own progress (`running`,
    their sum: batch_running_progress; the batch list leaves it out)."""
    total = batch.n_total
    if not total:
        return 0.0
    done = batch.n_succeeded + batch.n_failed + batch.n_cancelled + running
    return round(min(1.0, done / total), 4)


def batch_cost(batch: BatchRun) -> Decimal:
    # SQLite sums decimals as floats; quantizing keeps the API's figure exact on every database.
    return Decimal(batch.cost_so_far or 0).quantize(Decimal("0.0001"))


def batch_waste(batch: BatchRun) -> Decimal:
    """Paid attempts that delivered no clip (bad outputs, results that could not be had), in USD."""
    return Decimal(batch.wasted or 0).quantize(Decimal("0.0001"))


@dataclass(frozen=True)
class CostComparison:
    actual: Decimal
    other_provider: str
    other_estimate: Decimal
    saving: Decimal  # what choosing this provider saved (negative: what it cost extra)
    basis: str


def batch_cost_comparison(batch: BatchRun) -> CostComparison:
    """The batch's actual cost against what its finished clips would have cost on the other provider.

    fal's side is exact (its price list); the GPU's side uses the measured GPU time per clip and the
    rented $/h, and leaves out boot and idle time, which a busy persistent instance spreads thin.
    """
    from jobs.costs import format_rate
    from jobs.spend import Rates, job_estimate

    rates = Rates.now()
    other = "vastai" if batch.provider == "fal" else "fal"
    # A batch's jobs share a handful of parameter sets: estimate each set once, not each of 10,000 jobs. The
    # actual cost comes from the same pass over the finished jobs (a second query would read them again).
    by_params = list(batch.jobs.filter(status=S.SUCCEEDED).order_by().values("params")
                     .annotate(n=Count("id"), cost=Sum("cost_usd")).values_list("params", "n", "cost"))
    actual = sum((cost or Decimal("0") for _, _, cost in by_params), Decimal("0")).quantize(Decimal("0.0001"))
    estimate = sum((job_estimate(other, params, rates) * n for params, n, _ in by_params),
                   Decimal("0")).quantize(Decimal("0.0001"))
    basis = ("fal's price per video-second" if other == "fal" else
             f"{rates.seconds_per_clip:.1f} s of GPU per clip at ${format_rate(rates.dph)}/h")
    return CostComparison(actual, other, estimate, estimate - actual, basis)


def alerts_open(*, user) -> QuerySet:
    """Genhub-wide alerts concern everyone's work; batch alerts only their owner (and staff)."""
    alerts = Alert.objects.filter(resolved_at__isnull=True).select_related("batch")
    if not user.is_staff:
        alerts = alerts.filter(Q(batch__isnull=True) | Q(batch__owner=user))
    return alerts.order_by("-created_at")


def gpu_down_since():
    """Since when vastai work has been waiting for a GPU that is not there; None while one is ready.

    The later of: when the GPU stopped being available, and when the oldest waiting job arrived. An
    instance released days ago does not make today's first batch look like a days-long outage.
    """
    from gpu_instances.selectors import gpu_unavailable_since

    unavailable = gpu_unavailable_since()
    if unavailable is None:
        return None
    oldest_waiting = (Job.objects.filter(provider="vastai", status__in=(S.QUEUED, S.WAITING_FOR_GPU))
                      .order_by("created_at").values_list("created_at", flat=True).first())
    if oldest_waiting is None:
        return None
    return max(unavailable, oldest_waiting)


# --- what a job is really doing -------------------------------------------------------------------

NEXT_ON_GPU = "next_on_gpu"


def job_phases(jobs) -> dict[int, str]:
    """Each job's status as a person should read it, by job id: the status itself, except that a vastai
    job sent to SwarmUI that has not made a step yet while an earlier job on the same instance holds
    the GPU is `next_on_gpu` — it waits in SwarmUI's queue, it is not "running at 0 %".

    The job ahead may be anyone's: only its order is used, nothing of it is shown.
    """
    jobs = list(jobs)
    phases = {job.pk: job.status for job in jobs}
    waiting = [job for job in jobs if job.status == S.RUNNING and job.provider == "vastai" and job.instance_id
               and not job.progress]
    if not waiting:
        return phases
    on_instances = (Job.objects.filter(status=S.RUNNING, instance_id__in={job.instance_id for job in waiting})
                    .values_list("pk", "instance_id", "started_at", "progress"))
    first_on = {}  # instance → the running job that SwarmUI took first (the one generating)
    # Generating first (it has made steps), then by when each was sent.
    for pk, instance_id, _started_at, _progress in sorted(
            on_instances, key=lambda row: (not row[3], row[2] is None, row[2], row[0])):
        first_on.setdefault(instance_id, pk)
    for job in waiting:
        if first_on.get(job.instance_id) not in (None, job.pk):
            phases[job.pk] = NEXT_ON_GPU
    return phases


def gpu_activity_for(batch: BatchRun):
    """What the GPU is doing, for a vastai batch whose jobs wait for it or run on it; None when that
    says nothing (a fal batch, a finished one, a GPU that is ready)."""
    from gpu_instances.selectors import gpu_activity

    counts = batch_counts(batch)
    if batch.provider != "vastai" or not any(counts[name] for name in (S.QUEUED, S.WAITING_FOR_GPU, S.RUNNING)):
        return None
    activity = gpu_activity()
    return None if activity.ready else activity


# --- what changed since the live page last looked -------------------------------------------------

# More changed jobs than this since a client's cursor (it was away, or something holds the cursor back):
# it is told to read its page again instead of getting a reply the size of the batch.
CHANGES_LIMIT = 500


def change_cursor(batch: BatchRun) -> str:
    """The cursor for `batch_changes`: which writes the caller has seen, as a snapshot "xmin:xmax:xip,…".

    PostgreSQL: `change_mark` is the id of the transaction that last changed what a job shows, and the
    cursor is the database snapshot taken just before the jobs are read. Transactions commit out of
    order, so a timestamp or a sequence number taken at write time can be overtaken — a row stamped
    earlier but committed after a poll would never be sent — and clocks differ between web hosts. A
    snapshot says exactly which transactions had committed: those below xmax and not in its in-progress
    list (xip). Everything they wrote was visible to the read that followed, so the next poll asks only
    for marks ≥ xmax or in xip: nothing is missed, and nothing is sent again except rows whose writers
    were still running (and may have committed before the read). A long transaction elsewhere costs
    nothing, as it would with an "xmin" cursor that made every later change look new.

    SQLite (one writer, commits in order): one past the batch's highest mark, as "n:n:".
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_snapshot()::text")
            return cursor.fetchone()[0]
    mark = (batch.jobs.aggregate(mark=Max("change_mark"))["mark"] or 0) + 1
    return f"{mark}:{mark}:"


CURSOR_PATTERN = r"^\d{1,20}:\d{1,20}:(\d{1,20}(,\d{1,20}){0,999})?$"


def _unseen(cursor: str) -> Q:
    _xmin, xmax, in_progress = cursor.split(":")
    unseen = Q(change_mark__gte=int(xmax))
    if in_progress:
        unseen |= Q(change_mark__in=[int(xid) for xid in in_progress.split(",")])
    return unseen


def batch_changes(*, batch: BatchRun, since: str) -> tuple[str, list[Job] | None]:
    """(next cursor, the batch's jobs changed since the `since` cursor, in position order); None instead of
    the jobs when there are more than CHANGES_LIMIT of them. The cursor is taken before the read."""
    cursor = change_cursor(batch)
    changed = list(batch_jobs(batch=batch).filter(_unseen(since)).order_by("change_mark", "id")[:CHANGES_LIMIT + 1])
    if len(changed) > CHANGES_LIMIT:
        return cursor, None
    return cursor, sorted(changed, key=lambda job: (job.position, job.pk))
