"""What the GPU progress watchdog needs to know about the jobs on an instance (the orchestrator asks
through the `instance_progress` hook).

A generation stalls when it stops advancing: SwarmUI's queue can wedge while its WebSocket stays open on
keep-alives and every status route answers (upstream SwarmUI issue #1219), so the only trustworthy sign
of life is progress. The limit comes from genhub's own measurements: the time one sampling step took on
this instance (or, before it has finished anything, on any instance), scaled to the parameters of the
jobs now on it, times a safety factor, never below a floor.
"""

import statistics
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Max
from django.db.models.functions import Coalesce
from django.utils import timezone

from jobs.models import Job

S = Job.Status
SAMPLES = 20  # recent finished jobs a per-step figure is taken from


@dataclass(frozen=True)
class InstanceProgress:
    running: int  # jobs placed on the instance and running
    last_moved_at: datetime | None  # last placement, progress step or finished job on it
    stall_limit_seconds: float
    last_success_at: datetime | None

    @property
    def stalled_for(self) -> float | None:
        """Seconds without progress, when beyond the limit while work is on the instance; else None."""
        if not self.running or self.last_moved_at is None:
            return None
        quiet = (timezone.now() - self.last_moved_at).total_seconds()
        return quiet if quiet > self.stall_limit_seconds else None


def instance_progress(*, instance_id: int) -> InstanceProgress:
    on_instance = Job.objects.filter(instance_id=instance_id)
    running = on_instance.filter(status=S.RUNNING)
    params = list(running.values_list("params", flat=True))
    moved = running.aggregate(at=Max(Coalesce("progress_at", "started_at")))["at"]
    # A job that just finished moved the queue too: the next one may not have reported its first step yet.
    finished = on_instance.filter(finished_at__isnull=False).aggregate(at=Max("finished_at"))["at"]
    last_success = on_instance.filter(status=S.SUCCEEDED).aggregate(at=Max("finished_at"))["at"]
    return InstanceProgress(running=len(params), last_moved_at=max(filter(None, (moved, finished)), default=None),
                            stall_limit_seconds=stall_limit_seconds(instance_id=instance_id, params_list=params),
                            last_success_at=last_success)


def stall_limit_seconds(*, instance_id: int | None, params_list) -> float:
    if settings.SWARMUI_STALL_SECONDS > 0:
        return float(settings.SWARMUI_STALL_SECONDS)
    floor = float(settings.SWARMUI_STALL_FLOOR_SECONDS)
    per_unit = _seconds_per_step_unit(instance_id)
    if per_unit is None or not params_list:
        return floor
    longest_step = max(per_unit * _work(params) for params in params_list)
    return max(floor, settings.SWARMUI_STALL_FACTOR * longest_step)


def _work(params: dict) -> float:
    """One sampling step's work, in megapixel-frames: a step's time grows with the latent's size."""
    return max(1, params.get("width") or 832) * max(1, params.get("height") or 480) \
        * max(1, params.get("num_frames") or 81) / 1e6


def _seconds_per_step_unit(instance_id: int | None) -> float | None:
    """The median seconds per step per megapixel-frame of recent successes on the instance, else anywhere."""
    done = Job.objects.filter(provider="vastai", status=S.SUCCEEDED, generation_seconds__gt=0)
    for scope in (done.filter(instance_id=instance_id), done):
        rows = list(scope.order_by("-finished_at").values_list("generation_seconds", "params")[:SAMPLES])
        if rows:
            return statistics.median(seconds / (max(1, params.get("steps") or 1) * _work(params))
                                     for seconds, params in rows)
    return None
