"""What has been spent, what a job will cost, and whether a cap lets more work start.

Money is Decimal throughout. Spend counts what a provider bills us:
- fal: each finished job's cost (price per video-second × seconds);
- vast.ai: every instance's hourly price × the time it existed in the period (boot and idle included:
  vast bills them), not just the seconds attributed to jobs.
"""

import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from statistics import median

from django.conf import settings
from django.db.models import Q, Sum
from django.utils import timezone

from gpu_instances.models import GpuInstance
from jobs.costs import CENT_FRACTION, fal_cost, gpu_cost
from jobs.models import BatchRun, Job

S = Job.Status
ZERO = Decimal("0")


def month_start(now: datetime | None = None) -> datetime:
    now = now or timezone.now()
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


# --- estimates ---------------------------------------------------------------------------


def vast_seconds_per_clip() -> float:
    """Measured: the median GPU time of the last clips the instance made; the setting until there are any."""
    recent = list(Job.objects.filter(provider="vastai", status=S.SUCCEEDED, generation_seconds__isnull=False)
                  .order_by("-finished_at").values_list("generation_seconds", flat=True)[:25])
    return median(recent) if recent else float(settings.VAST_ESTIMATED_SECONDS_PER_CLIP)


def vast_dph() -> Decimal:
    """The price of the GPU we rent now (or last rented); the setting before the first rental."""
    latest = GpuInstance.objects.filter(dph_usd__isnull=False).order_by("-created_at").first()
    return latest.dph_usd if latest else Decimal(settings.VAST_ESTIMATED_DPH)


@dataclass(frozen=True)
class Rates:
    """The vast figures, read once per decision rather than once per job."""

    seconds_per_clip: float
    dph: Decimal

    @classmethod
    def now(cls) -> "Rates":
        return cls(vast_seconds_per_clip(), vast_dph())


def job_estimate(provider: str, params: dict, rates: Rates) -> Decimal:
    """What one job is expected to cost on `provider`."""
    if provider == "fal":
        return fal_cost(params)
    return gpu_cost(dph_usd=rates.dph, seconds=rates.seconds_per_clip)


# --- spend ---------------------------------------------------------------------------------


def instance_billed(instance: GpuInstance, *, since: datetime, until: datetime) -> Decimal:
    """What vast bills for the part of the instance's life inside [since, until]."""
    if instance.dph_usd is None:
        return ZERO
    start = max(instance.created_at, since)
    end = min(instance.destroyed_at or until, until)
    seconds = (end - start).total_seconds()
    return gpu_cost(dph_usd=instance.dph_usd, seconds=seconds) if seconds > 0 else ZERO


def monthly_spend(now: datetime | None = None) -> Decimal:
    now = now or timezone.now()
    since = month_start(now)
    # Finished this month, or still running with attempts fal already billed.
    fal = Job.objects.filter(provider="fal").filter(
        Q(finished_at__gte=since) | Q(finished_at__isnull=True, cost_usd__isnull=False)
    ).aggregate(total=Sum("cost_usd"))["total"]
    instances = GpuInstance.objects.filter(dph_usd__isnull=False).filter(
        Q(destroyed_at__isnull=True) | Q(destroyed_at__gte=since))
    vast = sum((instance_billed(i, since=since, until=now) for i in instances), ZERO)
    return (Decimal(fal or 0) + vast).quantize(CENT_FRACTION, rounding=ROUND_HALF_UP)


def batch_spend(batch: BatchRun) -> Decimal:
    total = batch.jobs.aggregate(total=Sum("cost_usd"))["total"]
    return Decimal(total or 0).quantize(CENT_FRACTION, rounding=ROUND_HALF_UP)


def batch_waste(batch: BatchRun) -> Decimal:
    """What the batch paid for attempts that delivered no clip; part of `batch_spend`, shown apart."""
    total = batch.jobs.aggregate(total=Sum("wasted_usd"))["total"]
    return Decimal(total or 0).quantize(CENT_FRACTION, rounding=ROUND_HALF_UP)


def _committed(jobs, rates: Rates) -> Decimal:
    """Running jobs will be billed too: count them before they finish."""
    return sum((job_estimate(provider, params, rates) for provider, params in jobs.values_list("provider", "params")),
               ZERO)


# --- the gate ------------------------------------------------------------------------------


@dataclass
class Gate:
    """Decides, in queue order, which jobs still fit under the caps, counting each admitted job."""

    rates: Rates
    monthly_room: Decimal | None  # None: no monthly cap
    batch_room: dict  # batch id → room left (only batches with a cap)

    @classmethod
    def open(cls) -> "Gate":
        rates = Rates.now()
        cap = settings.GENHUB_MONTHLY_BUDGET_USD
        running = Job.objects.filter(status=S.RUNNING)
        monthly_room = None
        if cap is not None:
            monthly_room = Decimal(cap) - monthly_spend() - _committed(running, rates)
        return cls(rates, monthly_room, {})

    budgets: dict = field(default_factory=dict)  # batch id → the batch (its cap), the first one seen
    prices: dict = field(default_factory=dict)  # (provider, parameters) → estimate, priced once

    def _room_for_batch(self, batch: BatchRun) -> Decimal | None:
        if batch.budget_usd is None:
            return None
        if batch.pk not in self.batch_room:
            running = batch.jobs.filter(status=S.RUNNING)
            self.batch_room[batch.pk] = batch.budget_usd - batch_spend(batch) - _committed(running, self.rates)
        return self.batch_room[batch.pk]

    def admit(self, job: Job) -> str | None:
        """None if the job fits (and is counted); otherwise why it must wait."""
        return self.admit_values(provider=job.provider, batch_id=job.batch_id, params=job.params, batch=job.batch)

    def admit_values(self, *, provider: str, batch_id: int, params: dict, batch: BatchRun | None = None) -> str | None:
        """`admit` from a job's values alone (the caps' walk reads no model objects)."""
        key = (provider, json.dumps(params, sort_keys=True))
        if key not in self.prices:
            self.prices[key] = job_estimate(provider, params, self.rates)
        cost = self.prices[key]
        if batch_id not in self.budgets:
            batch = batch or BatchRun.objects.only("id", "budget_usd").get(pk=batch_id)
            self.budgets[batch_id] = batch
        batch = self.budgets[batch_id]
        batch_room = self._room_for_batch(batch)
        if batch_room is not None and cost > batch_room:
            return (f"batch budget ${batch.budget_usd} reached (this clip ≈ ${cost.quantize(Decimal('0.01'))}); "
                    "raise the batch budget to resume")
        if self.monthly_room is not None and cost > self.monthly_room:
            return (f"monthly budget ${settings.GENHUB_MONTHLY_BUDGET_USD} reached; raise GENHUB_MONTHLY_BUDGET_USD "
                    "to resume")
        if batch_room is not None:
            self.batch_room[batch_id] = batch_room - cost
        if self.monthly_room is not None:
            self.monthly_room -= cost
        return None


def monthly_cap_reached() -> bool:
    cap = settings.GENHUB_MONTHLY_BUDGET_USD
    return cap is not None and monthly_spend() >= Decimal(cap)


def instance_attributed(*, instance_id: int) -> Decimal:
    """The part of an instance's bill that its jobs' GPU time accounts for."""
    total = Job.objects.filter(instance_id=instance_id, cost_usd__isnull=False).aggregate(
        total=Sum("cost_usd"))["total"]
    return Decimal(total or 0).quantize(CENT_FRACTION, rounding=ROUND_HALF_UP)
