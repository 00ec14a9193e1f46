"""Meeting a batch's deadline: while the GPU alone would finish too late, move the fewest waiting jobs
(from the end of the queue) to fal that lets it finish in time, within the budget caps.

Evaluated in every pass of the vast pump (one pump at a time, under its lease): a few aggregate
queries per batch with a deadline and waiting GPU work, and one set-based update.

Moves cannot be undone (work at fal may already be paid for), so every pass's estimate noise would
only ever add moves. So a batch's first plan moves its *expected* need (median seconds per clip) at
once, giving fal the most time; everything after that — corrections as the GPU measures itself, and
the hedge for the pessimistic bound (`eta.gpu_span` high) — moves only once the deadline is so near
that fal could no longer take it later (HEDGE_TURNAROUNDS × fal's time for it). By then most of the
GPU's work is done and measured, so the correction is small or nothing. All of it aims
GENHUB_DEADLINE_MARGIN_SECONDS before the deadline. Once the GPU alone is on time (a faster
replacement, cancelled jobs) nothing more moves; nothing ever moves back.
"""

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from jobs import services
from jobs.costs import fal_cost
from jobs.eta import (
    GPU_WAITING,
    SpeedEstimate,
    fal_clips_ahead,
    fal_seconds,
    fal_turnaround,
    gpu_clips_ahead,
    gpu_clips_left,
    gpu_seconds_per_clip,
    gpu_span,
    gpu_state,
)
from jobs.models import BatchRun, Job
from jobs.spend import Rates, batch_spend, job_estimate, monthly_spend

log = logging.getLogger(__name__)
S = Job.Status
ZERO = Decimal("0")
# Every job the planner moves has a fallback reason starting with this.
DEADLINE_REASON = "deadline:"
# The hedge moves once the time left is within this many times what fal needs for it (waves × turnaround).
HEDGE_TURNAROUNDS = 2


@dataclass(frozen=True)
class Split:
    """How `waiting` GPU clips are shared out: `gpu` stay, `fal` move; when each side should be done
    (seconds from now, medians) and whether the deadline is met."""

    gpu: int
    fal: int
    gpu_seconds: float
    fal_seconds: float
    meets: bool

    @property
    def seconds(self) -> float:
        return max(self.gpu_seconds, self.fal_seconds)


def plan_split(*, waiting: int, gpu_before: float, boot_left: float, speed: SpeedEstimate, fal_before: int,
               turnaround: float, seconds_left: float) -> Split:
    """The fewest of `waiting` clips to move to fal so that the GPU's pessimistic finish is within
    `seconds_left`. `gpu_before`: GPU clips that run first (older batches, running jobs)."""

    def gpu_high(keep: int) -> float:
        return boot_left + gpu_span(gpu_before + keep, speed)[2]

    low, high = 0, waiting  # bisect on the number moved: the GPU's finish only falls as more move
    while low < high:
        middle = (low + high) // 2
        if gpu_high(waiting - middle) <= seconds_left:
            high = middle
        else:
            low = middle + 1
    move = low
    keep = waiting - move
    gpu_mid = boot_left + gpu_span(gpu_before + keep, speed)[0] if gpu_before + keep else 0.0
    fal_mid = fal_seconds(fal_before + move, turnaround) if fal_before + move else 0.0
    meets = gpu_high(keep) <= seconds_left and fal_mid <= seconds_left
    return Split(keep, move, gpu_mid, fal_mid, meets)


def expected_only(speed: SpeedEstimate) -> SpeedEstimate:
    """The same figure without its spread: plans for the median."""
    return SpeedEstimate(speed.median, speed.median, speed.median, max(1, speed.samples), speed.basis)


def _extra_cost(params: dict, rates: Rates) -> Decimal:
    """What moving one clip adds to the estimated spend: fal's price instead of the GPU's share."""
    return max(ZERO, fal_cost(params) - job_estimate("vastai", params, rates))


def _committed(jobs, rates: Rates) -> Decimal:
    return sum((job_estimate(provider, params, rates) for provider, params in
                jobs.exclude(status=S.PAUSED).values_list("provider", "params")), ZERO)


def moves_within_caps(batch: BatchRun, wanted: int, rates: Rates) -> tuple[int, str]:
    """How many of `wanted` moves the caps allow (counting what all unfinished work will still cost), and
    which cap stops the rest ("" when none does)."""
    extra = _extra_cost(batch.params, rates)
    if extra <= 0:
        return wanted, ""
    allowed, stopped_by = wanted, ""
    if batch.budget_usd is not None:
        room = batch.budget_usd - batch_spend(batch) - _committed(batch.jobs.filter(status__in=Job.UNFINISHED), rates)
        fits = max(0, math.floor(room / extra))
        if fits < allowed:
            allowed, stopped_by = fits, f"the batch budget ${batch.budget_usd}"
    cap = settings.GENHUB_MONTHLY_BUDGET_USD
    if cap is not None:
        room = Decimal(cap) - monthly_spend() - _committed(Job.objects.filter(status__in=Job.UNFINISHED), rates)
        fits = max(0, math.floor(room / extra))
        if fits < allowed:
            allowed, stopped_by = fits, f"the monthly budget ${cap}"
    return allowed, stopped_by


def _when(moment: datetime) -> str:
    return timezone.localtime(moment, timezone.get_fixed_timezone(0)).strftime("%Y-%m-%d %H:%M:%S UTC")


def deadlines_enforce(*, now: datetime | None = None) -> int:
    """Moves, for every batch with a deadline the GPU alone would miss, the fewest waiting jobs to fal.
    Older batches first (they run first on the GPU, so what they move shortens the wait of later ones).
    Returns the number of jobs moved."""
    now = now or timezone.now()
    batches = list(BatchRun.objects.filter(deadline__isnull=False, jobs__provider="vastai",
                                           jobs__status__in=GPU_WAITING).distinct().order_by("pk"))
    if not batches:
        return 0
    state = gpu_state(now)
    turnaround = fal_turnaround()
    rates = Rates.now()
    return sum(_enforce_one(batch, now=now, state=state, turnaround=turnaround.median, rates=rates)
               for batch in batches)


def _set_note(batch: BatchRun, note: str) -> None:
    if batch.deadline_note != note[:300]:
        BatchRun.objects.filter(pk=batch.pk).update(deadline_note=note[:300])


def _enforce_one(batch: BatchRun, *, now, state, turnaround: float, rates: Rates) -> int:
    to_deadline = (batch.deadline - now).total_seconds()
    if to_deadline <= 0:
        _set_note(batch, f"the deadline {_when(batch.deadline)} has passed; no more jobs move to fal")
        return 0
    speed = gpu_seconds_per_clip(instance=state.instance, params=batch.params)
    jobs = batch.jobs.filter(provider="vastai")
    waiting = jobs.filter(status__in=GPU_WAITING).count()
    running = gpu_clips_left(jobs.filter(status=S.RUNNING))
    fal_before = fal_clips_ahead(batch) + batch.jobs.filter(provider="fal", status__in=(S.QUEUED, S.RUNNING)).count()
    ahead = gpu_clips_ahead(batch)
    plan = dict(waiting=waiting, gpu_before=ahead + running, boot_left=state.boot_left,
                fal_before=fal_before, turnaround=turnaround,
                seconds_left=to_deadline - settings.GENHUB_DEADLINE_MARGIN_SECONDS)
    expected = plan_split(speed=expected_only(speed), **plan)
    hedged = plan_split(speed=speed, **plan)
    hedge_now = plan["seconds_left"] <= HEDGE_TURNAROUNDS * max(turnaround, fal_seconds(fal_before + hedged.fal,
                                                                                         turnaround))
    first_plan = not batch.jobs.filter(fallback_reason__startswith=DEADLINE_REASON).exists()
    if hedge_now:
        split = hedged
    elif first_plan:
        split = expected
    else:  # a correction: decided near the deadline, on what the GPU will have measured by then
        split = Split(waiting, 0, expected.gpu_seconds, expected.fal_seconds, expected.meets)
    later = "" if hedge_now or not hedged.fal or hedged.fal <= split.fal else (
        f"up to {hedged.fal - split.fal} more job(s) may move to fal close to the deadline if the GPU stays "
        "slower than it needs to be")
    if not split.fal:
        _set_note(batch, later)
        return 0
    if turnaround > to_deadline:
        _set_note(batch, f"the GPU alone finishes after the deadline, and a job sent to fal now would not be back "
                         f"in time either (fal takes about {turnaround:.0f} s); nothing more moves")
        return 0
    allowed, stopped_by = moves_within_caps(batch, split.fal, rates)
    note = ""
    if allowed < split.fal:
        note = (f"to finish by the deadline {split.fal} more job(s) would have to move to fal, but {stopped_by} "
                f"allows only {allowed}; raise it to meet the deadline")
    elif not split.meets:
        note = "even with fal the deadline cannot be met: the remaining jobs move to fal to finish as early as possible"
    _set_note(batch, note or later)
    if not allowed:
        return 0
    gpu_alone = now + timedelta(seconds=state.boot_left + gpu_span(ahead + running + waiting, speed)[0])
    reason = (f"{DEADLINE_REASON} moved to fal to finish by {_when(batch.deadline)}; the GPU alone would finish "
              f"about {_when(gpu_alone)} ({speed.median:.1f} s per clip)")
    last = (jobs.filter(status__in=GPU_WAITING).order_by("-position", "-id").values_list("pk", flat=True)[:allowed])
    moved = services.jobs_fall_back(job_ids=list(last), reason=reason)
    if moved:
        log.info("batch %s: %d job(s) moved to fal to meet its deadline %s", batch.pk, moved, _when(batch.deadline))
    return moved
