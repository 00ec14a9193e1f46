"""The dry run: how a validated batch pairs images with prompts, and what it would cost and how
long it would take on each provider.

These are planning numbers from settings, not promises: a job's real cost is measured when it
finishes (`jobs.costs`).
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.utils import timezone

from jobs import eta
from jobs.costs import CENT_FRACTION, fal_cost, format_rate
from jobs.intake import BatchSpec, ItemSpec, parse_rows
from jobs.models import Job, Provider
from jobs.spend import Rates, job_estimate, monthly_spend

CENT = Decimal("0.01")


@dataclass(frozen=True)
class Estimate:
    provider: str
    label: str
    items: int
    cost_usd: Decimal
    seconds: int
    basis: str  # how the numbers were reached, shown next to them

    @property
    def duration_text(self) -> str:
        return duration_text(self.seconds)


def duration_text(seconds: float) -> str:
    """'45 s', '12 min', '3 h 20 min': rough on purpose, like the estimate itself."""
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def estimate_fal(items: list[ItemSpec]) -> Estimate:
    """fal bills each clip by its length; clips run in parallel up to the in-flight limit."""
    per_clip = settings.FAL_ESTIMATED_SECONDS_PER_CLIP
    parallel = max(1, settings.FAL_MAX_IN_FLIGHT)
    return Estimate(
        provider=Provider.FAL, label=Provider.FAL.label, items=len(items),
        cost_usd=sum((fal_cost(item.params) for item in items), Decimal("0")),
        seconds=math.ceil(len(items) / parallel) * per_clip,
        basis=f"fal's price per video-second; about {per_clip} s per clip, {parallel} at a time",
    )


def estimate_vastai(items: list[ItemSpec]) -> Estimate:
    """One rented GPU makes one clip after another; we pay its hourly price for that time.

    The same figures the caps and the batch page use: the measured GPU time per clip and the rented $/h
    (the settings until genhub has measured its own)."""
    rates = Rates.now()
    per_clip = math.ceil(rates.seconds_per_clip)
    cost = Decimal(len(items)) * Decimal(str(rates.seconds_per_clip)) * rates.dph / Decimal(3600)
    return Estimate(
        provider=Provider.VASTAI, label=Provider.VASTAI.label, items=len(items),
        cost_usd=cost.quantize(CENT_FRACTION, rounding=ROUND_HALF_UP),
        seconds=len(items) * per_clip,
        basis=(f"about {per_clip} s per clip, one at a time, at ${format_rate(rates.dph)}/h; "
               "plus the boot time when no GPU is ready"),
    )


def estimate_batch(items: list[ItemSpec]) -> list[Estimate]:
    """The same items on every provider, so the user can compare before choosing."""
    return [estimate_fal(items), estimate_vastai(items)]


@dataclass(frozen=True)
class PreviewRow:
    number: int
    file: str
    prompt: str
    negative_prompt: str
    seed: int | None  # None: drawn at random, and drawn again when the batch is created
    width: int
    height: int


def preview_rows(spec: BatchSpec, rows_text: str = "") -> list[PreviewRow]:
    """The pairing build_batch made, item by item. A seed nobody gave (no batch seed, no seed in
    the file's row) was drawn at random for this preview only, so it is shown as random."""
    rows, _ = parse_rows(rows_text)
    seeded_files = {str(row.get("file") or "").strip() for row in rows if str(row.get("seed") or "").strip()}
    fixed = "seed" in spec.params
    return [
        PreviewRow(number, item.image.name, item.prompt, item.negative_prompt,
                   item.seed if fixed or item.image.name in seeded_files else None,
                   item.params["width"], item.params["height"])
        for number, item in enumerate(spec.items, start=1)
    ]


def cap_warnings(spec: BatchSpec, estimates: list[Estimate]) -> list[str]:
    """What the dry run must say when the chosen provider's estimate would run into a budget cap."""
    chosen = next((e for e in estimates if e.provider == spec.provider), None)
    if chosen is None or not chosen.items:
        return []
    per_clip = chosen.cost_usd / chosen.items
    warnings = []

    def fits(room: Decimal) -> int:
        return max(0, min(chosen.items, int(room / per_clip))) if per_clip else chosen.items

    if spec.budget_usd is not None and chosen.cost_usd > spec.budget_usd:
        warnings.append(f"The estimate on {chosen.label} (${chosen.cost_usd}) is over this batch's budget "
                        f"(${spec.budget_usd}): about {fits(spec.budget_usd)} of {chosen.items} clips will run, "
                        "the rest will wait, paused, until the budget is raised.")
    cap = settings.GENHUB_MONTHLY_BUDGET_USD
    if cap is not None:
        room = max(Decimal("0"), Decimal(cap) - monthly_spend())
        if chosen.cost_usd > room:
            warnings.append(f"The estimate on {chosen.label} (${chosen.cost_usd}) is over what is left of the monthly "
                            f"budget (${room.quantize(Decimal('0.01'))} of ${cap}): about {fits(room)} of "
                            f"{chosen.items} clips will run this month.")
    return warnings


@dataclass(frozen=True)
class DeadlineChoice:
    """The dry run's side-by-side for a vastai batch with a deadline: everything on the GPU, or the
    split the deadline planner (`jobs.deadline`) would make."""

    deadline: datetime
    all_gpu_cost: Decimal
    all_gpu_done: datetime
    gpu: int
    fal: int
    split_cost: Decimal
    split_done: datetime
    meets: bool
    basis: str

    @property
    def text(self) -> str:
        when = clock_text
        return (f"all on the GPU: ${self.all_gpu_cost}, done at {when(self.all_gpu_done)} · to finish by "
                f"{when(self.deadline)}: {self.gpu} on the GPU + {self.fal} on fal: ${self.split_cost}, "
                f"done at {when(self.split_done)}")


def clock_text(moment: datetime) -> str:
    return timezone.localtime(moment, timezone.get_fixed_timezone(0)).strftime("%Y-%m-%d %H:%M UTC")


def deadline_choice(spec: BatchSpec, *, now: datetime | None = None) -> DeadlineChoice | None:
    """None unless the batch is for the GPU and has a deadline. The new batch would queue behind all
    GPU work there is now, so that work comes first."""
    if spec.deadline is None or spec.provider != Provider.VASTAI or not spec.items:
        return None
    from jobs.deadline import expected_only, plan_split

    now = now or timezone.now()
    state = eta.gpu_state(now)
    speed = eta.gpu_seconds_per_clip(instance=state.instance, params=spec.params)
    turnaround = eta.fal_turnaround()
    ahead = eta.gpu_clips_left(Job.objects.all())
    fal_ahead = Job.objects.filter(provider="fal", status__in=(Job.Status.QUEUED, Job.Status.RUNNING)).count()
    n = len(spec.items)
    # The expected split (median speed); the planner may move a few more near the deadline if the GPU is slow.
    split = plan_split(waiting=n, gpu_before=ahead, boot_left=state.boot_left, speed=expected_only(speed),
                       fal_before=fal_ahead,
                       turnaround=turnaround.median,
                       seconds_left=(spec.deadline - now).total_seconds() - settings.GENHUB_DEADLINE_MARGIN_SECONDS)
    rates = Rates.now()
    gpu_each = job_estimate("vastai", spec.params, rates)
    costs_fal = [fal_cost(item.params) for item in spec.items]
    all_gpu = now + timedelta(seconds=state.boot_left + eta.gpu_span(ahead + n, speed)[0])
    # The planner moves from the end of the queue: the last `split.fal` items.
    split_cost = gpu_each * split.gpu + sum(costs_fal[split.gpu:], Decimal("0"))
    return DeadlineChoice(
        deadline=spec.deadline, all_gpu_cost=(gpu_each * n).quantize(CENT, rounding=ROUND_HALF_UP),
        all_gpu_done=all_gpu, gpu=split.gpu, fal=split.fal,
        split_cost=split_cost.quantize(CENT, rounding=ROUND_HALF_UP),
        split_done=now + timedelta(seconds=split.seconds), meets=split.meets,
        basis=f"{speed.basis}; {turnaround.basis}" + (f"; {state.boot.basis}" if state.boot_left else ""))
