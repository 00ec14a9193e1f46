"""When a batch should be done, and how sure genhub is: the figures the batch page, the API, the dry
run and the deadline planner (`jobs.deadline`) share.

- GPU: the batch's remaining vastai work, and the work of older batches ahead of it in the queue
  (a generating job counts by its remaining share), × the measured GPU seconds per clip, one clip at
  a time; plus what is left of the boot while no instance is ready.
- fal: its measured turnaround (claimed → finished) per wave of FAL_MAX_IN_FLIGHT requests.

Every "how long per clip, and how sure" question goes through `gpu_seconds_per_clip`: jobs' own measured
clips first, then the speed history of `gpu_instances.speed` (machine, GPU model, shipped table).
"""

import math
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.utils import timezone

from gpu_instances import speed
from gpu_instances.models import GpuInstance
from jobs.models import BatchCounts, BatchRun, Job
from jobs.selectors import batch_tally

S = Job.Status
SAMPLES = 25  # the most recent clips a figure is taken from
MIN_SAMPLES = 3  # fewer than this from one source: ask the next source
# Planning figures from settings are guesses, not measurements: this wide either way.
GUESS_LOW, GUESS_HIGH = 0.5, 2.0
# Where a GPU figure's median can sit within a batch's total, by the spread of one clip (≈ p10/p90).
Z = 1.28
GPU_WAITING = (S.QUEUED, S.WAITING_FOR_GPU)


@dataclass(frozen=True)
class SpeedEstimate:
    """Seconds per clip: the median, a low and high bound (≈ p10, p90), how many clips it rests on, and why."""

    median: float
    low: float
    high: float
    samples: int
    basis: str


def _spread(values: list[float], basis: str) -> SpeedEstimate:
    middle = statistics.median(values)
    if len(values) >= 5:
        deciles = statistics.quantiles(values, n=10, method="inclusive")
        low, high = min(middle, deciles[0]), max(middle, deciles[-1])
    else:  # too few for deciles: a quarter either way
        low, high = middle * 0.75, middle * 1.25
    return SpeedEstimate(middle, low, high, len(values), basis)


def _same_shape(params: dict) -> Q:
    keys = ("num_frames", "width", "height", "steps")
    return Q(**{f"params__{key}": params[key] for key in keys if params and key in params})


def _guess(value, basis: str) -> SpeedEstimate:
    """A planning figure from a setting: a guess, not a measurement, so its bounds are wide either way."""
    guess = float(value)
    return SpeedEstimate(guess, guess * GUESS_LOW, guess * GUESS_HIGH, 0, basis.format(guess))


def gpu_seconds_per_clip(*, instance: GpuInstance | None = None, params: dict | None = None) -> SpeedEstimate:
    """GPU seconds for one clip of `params`: from the instance's own clips of that shape, else its clips of
    any shape, else recent clips on any instance; with none measured yet, what genhub knows of the
    instance's machine and GPU model (`gpu_instances.speed`: self-tests, history, the shipped table), else
    VAST_ESTIMATED_SECONDS_PER_CLIP."""
    done = Job.objects.filter(provider="vastai", status=S.SUCCEEDED, generation_seconds__isnull=False)
    sources = []
    if instance is not None:
        sources += [(done.filter(_same_shape(params or {}), instance=instance), "this GPU, clips of this size"),
                    (done.filter(instance=instance), "this GPU, clips of other sizes")]
    sources += [(done.filter(_same_shape(params or {})), "recent GPUs, clips of this size"),
                (done, "recent GPUs")]
    for queryset, basis in sources:
        values = list(queryset.order_by("-finished_at").values_list("generation_seconds", flat=True)[:SAMPLES])
        if len(values) >= MIN_SAMPLES:
            estimate = _spread(values, basis)
            return SpeedEstimate(estimate.median, estimate.low, estimate.high, estimate.samples,
                                 f"{estimate.median:.1f} s per clip measured ({basis}, {len(values)} clips)")
    if instance is not None and instance.gpu_name:
        known = speed.expected_seconds_per_clip(params=params or {}, instance=instance)
        return SpeedEstimate(known.median, known.low, known.high, known.samples,
                             f"{known.median:.1f} s per clip ({known.describe()}; no clip of this batch's GPU "
                             "measured yet)")
    return _guess(settings.VAST_ESTIMATED_SECONDS_PER_CLIP,
                  "{:.0f} s per clip (VAST_ESTIMATED_SECONDS_PER_CLIP; nothing measured yet)")


def boot_seconds() -> SpeedEstimate:
    """How long an instance takes from rental to ready: the median of past boots, else the setting."""
    boots = [(ready - created).total_seconds() for created, ready in
             GpuInstance.objects.filter(ready_at__isnull=False).order_by("-created_at")
             .values_list("created_at", "ready_at")[:SAMPLES]]
    if len(boots) >= 1:
        estimate = _spread(boots, "past boots")
        return SpeedEstimate(estimate.median, estimate.low, estimate.high, len(boots),
                             f"boot {estimate.median:.0f} s (median of {len(boots)} past boot(s))")
    return _guess(settings.GENHUB_BOOT_ESTIMATE_SECONDS, "boot {:.0f} s (GENHUB_BOOT_ESTIMATE_SECONDS)")


def fal_turnaround() -> SpeedEstimate:
    """fal's time from our submit to a stored clip, queue included: median of recent clips, else the setting."""
    recent = (Job.objects.filter(provider="fal", status=S.SUCCEEDED, started_at__isnull=False,
                                 finished_at__isnull=False).order_by("-finished_at")
              .values_list("started_at", "finished_at")[:SAMPLES])
    values = [(end - start).total_seconds() for start, end in recent]
    if len(values) >= MIN_SAMPLES:
        estimate = _spread(values, "fal")
        return SpeedEstimate(estimate.median, estimate.low, estimate.high, len(values),
                             f"fal {estimate.median:.0f} s per clip measured ({len(values)} clips)")
    return _guess(settings.FAL_ESTIMATED_SECONDS_PER_CLIP, "fal {:.0f} s per clip (FAL_ESTIMATED_SECONDS_PER_CLIP)")


# --- the GPU's and fal's queues -------------------------------------------------------------------


@dataclass(frozen=True)
class GpuState:
    """What the GPU has to do before a batch's own work, and when it can start at all."""

    instance: GpuInstance | None  # the ready instance, if any
    boot_left: float  # seconds until an instance is ready (0 when one is)
    boot: SpeedEstimate


def gpu_state(now: datetime) -> GpuState:
    active = GpuInstance.objects.filter(state__in=GpuInstance.ACTIVE_STATES).order_by("-created_at").first()
    boot = boot_seconds()
    if active is not None and active.state == GpuInstance.State.READY:
        return GpuState(active, 0.0, boot)
    started = active.created_at if active is not None else now
    return GpuState(active, max(0.0, boot.median - (now - started).total_seconds()), boot)


def gpu_clips_left(jobs) -> float:
    """Clips of GPU work in `jobs`: waiting ones whole, running ones by what is left of them."""
    row = jobs.filter(provider="vastai").aggregate(
        waiting=Count("pk", filter=Q(status__in=GPU_WAITING)),
        running=Count("pk", filter=Q(status=S.RUNNING)),
        done=Sum("progress", filter=Q(status=S.RUNNING)))
    return row["waiting"] + row["running"] - (row["done"] or 0.0)


def _counted_clips_left(waiting: int, running: int, jobs) -> float:
    """gpu_clips_left from maintained counts (BatchCounts): only the progress of the generating jobs among
    `jobs` (few: the GPU's in-flight limit) is read from the jobs, and only when some are generating."""
    if not running:
        return float(waiting)
    done = jobs.filter(provider="vastai", status=S.RUNNING).aggregate(done=Sum("progress"))["done"] or 0.0
    return waiting + running - done


def batch_gpu_clips_left(batch: BatchRun) -> float:
    """gpu_clips_left of the batch's jobs, not all 10,000 of them counted again."""
    tally = batch_tally(batch)
    return _counted_clips_left(tally.n_gpu_waiting, tally.n_gpu_running, Job.objects.filter(batch=batch))


def gpu_clips_ahead(batch: BatchRun) -> float:
    """GPU work of older batches: the vast pump takes the queue oldest batch first. Their maintained counts
    (one row per batch), not every job genhub ever ran."""
    row = BatchCounts.objects.filter(batch_id__lt=batch.pk).aggregate(waiting=Sum("n_gpu_waiting"),
                                                                      running=Sum("n_gpu_running"))
    return _counted_clips_left(row["waiting"] or 0, row["running"] or 0, Job.objects.filter(batch_id__lt=batch.pk))


def fal_clips_ahead(batch: BatchRun) -> int:
    """fal jobs of older batches queued or running, from their maintained counts."""
    return BatchCounts.objects.filter(batch_id__lt=batch.pk).aggregate(n=Sum("n_fal_in_flight"))["n"] or 0


def fal_seconds(clips: int, turnaround: float) -> float:
    """fal runs up to FAL_MAX_IN_FLIGHT at once: whole waves of one turnaround each."""
    return math.ceil(clips / max(1, settings.FAL_MAX_IN_FLIGHT)) * turnaround if clips > 0 else 0.0


def gpu_span(clips: float, speed: SpeedEstimate) -> tuple[float, float, float]:
    """(median, low, high) seconds for `clips` clips one after another. Measured clips vary independently,
    so the bounds widen with √clips; a guess may be off for every clip alike, so its bounds scale with clips."""
    middle = clips * speed.median
    if not speed.samples:  # `samples`, not a property of our own: gpu_instances.speed's estimate fits here too
        return middle, clips * speed.low, clips * speed.high
    root = math.sqrt(clips)
    low = max(0.0, middle - Z * (speed.median - speed.low) * root)
    return middle, low, middle + Z * (speed.high - speed.median) * root


@dataclass(frozen=True)
class Eta:
    at: datetime
    seconds: float
    low: datetime
    high: datetime
    basis: str

    def as_json(self) -> dict:
        return {"at": self.at.isoformat(), "seconds": round(self.seconds), "low": self.low.isoformat(),
                "high": self.high.isoformat(), "basis": self.basis}


def batch_eta(batch: BatchRun, *, now: datetime | None = None) -> Eta | None:
    """When the batch's unfinished work should be done; None when nothing is left to do (or all of it is paused)."""
    now = now or timezone.now()
    # The batch's maintained counts (BatchCounts), as its page shows them: no scan of its jobs.
    tally = batch_tally(batch)
    own_gpu = batch_gpu_clips_left(batch)
    own_fal = tally.n_fal_in_flight
    storing = tally.n_storing > 0
    if not own_gpu and not own_fal and not storing:
        return None
    parts, low, mid, high = [], 0.0, 0.0, 0.0
    if own_gpu:
        state = gpu_state(now)
        speed = gpu_seconds_per_clip(instance=state.instance, params=batch.params)
        ahead = gpu_clips_ahead(batch)
        span = gpu_span(ahead + own_gpu, speed)
        boot_low = boot_high = state.boot_left
        if state.boot_left:
            share = state.boot_left / state.boot.median if state.boot.median else 1.0
            boot_low, boot_high = state.boot.low * share, state.boot.high * share
        mid, low, high = state.boot_left + span[0], boot_low + span[1], boot_high + span[2]
        parts.append(f"{own_gpu:.1f} clip(s) on the GPU" + (f" after {ahead:.1f} of older batches" if ahead else "")
                     + f" at {speed.basis}" + (f"; {state.boot.basis}, {state.boot_left:.0f} s left"
                                                if state.boot_left else ""))
    if own_fal:
        turnaround = fal_turnaround()
        waves = fal_clips_ahead(batch) + own_fal
        fal_mid = fal_seconds(waves, turnaround.median)
        mid, low = max(mid, fal_mid), max(low, fal_seconds(waves, turnaround.low))
        high = max(high, fal_seconds(waves, turnaround.high))
        parts.append(f"{own_fal} clip(s) on fal, {settings.FAL_MAX_IN_FLIGHT} at a time, at {turnaround.basis}")
    paused = tally.n_paused
    if paused:
        parts.append(f"{paused} paused job(s) not counted")
    return Eta(at=now + timedelta(seconds=mid), seconds=mid, low=now + timedelta(seconds=low),
               high=now + timedelta(seconds=high), basis="; ".join(parts))

