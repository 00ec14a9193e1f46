"""When genhub lets the persistent GPU go although nothing is wrong with it (the orchestrator asks)."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Max
from django.utils import timezone

from jobs.models import Job
from jobs.spend import monthly_cap_reached


def gpu_release_reason(*, instance_id: int, ready_at) -> str | None:
    """Called only while no vastai job waits or runs. A reason means: destroy the instance now.

    - a budget cap holds vastai work back: an idle GPU would only add to the spend;
    - idle shutdown (off by default, the instance is meant to persist): idle longer than the setting.
    A new job brings a new instance up as usual.
    """
    if Job.objects.filter(provider="vastai", status=Job.Status.PAUSED).exists():
        return "released: vastai work is paused by a budget cap"
    if monthly_cap_reached():
        return "released: the monthly budget is spent"
    idle_minutes = settings.GENHUB_IDLE_SHUTDOWN_MINUTES
    if idle_minutes and ready_at:
        last_job = Job.objects.filter(instance_id=instance_id).aggregate(last=Max("finished_at"))["last"]
        idle_since = max(filter(None, (ready_at, last_job)))
        if timezone.now() - idle_since >= timedelta(minutes=idle_minutes):
            return f"released: idle for {idle_minutes} min (GENHUB_IDLE_SHUTDOWN_MINUTES)"
    return None


# Jobs looked at to find the clip most of the waiting work asks for: the head of the queue is what runs next.
WAITING_PARAMS_SAMPLE = 500


def gpu_waiting_params() -> dict | None:
    """The generation parameters most common among the vastai jobs waiting (queue head first), or None.

    The orchestrator ranks offers by the cost of this clip.
    """
    waiting = (Job.objects.filter(provider="vastai", status__in=(Job.Status.QUEUED, Job.Status.WAITING_FOR_GPU))
               .order_by("batch_id", "position", "id").values_list("pk", flat=True)[:WAITING_PARAMS_SAMPLE])
    common = (Job.objects.filter(pk__in=list(waiting)).values("params").annotate(n=Count("id")).order_by("-n")
              .values_list("params", flat=True).first())
    return common or None
