"""How many more jobs a provider may take now, and which ones are next."""

from jobs.models import Job
from providers.base import Provider

S = Job.Status


def free_slots(provider: Provider, capacity: int, *, extra: int = 0) -> int:
    """Capacity minus what is running; `extra`: running jobs whose remote request has already completed
    (their results are still being checked), which hold no slot at the remote."""
    in_flight = Job.objects.filter(provider=provider.name, status=S.RUNNING).count() - extra
    return max(0, capacity - in_flight)


def next_queued(provider: Provider, limit: int) -> list[int]:
    if limit <= 0:
        return []
    # Oldest batch first, in the order the user gave the items.
    queued = Job.objects.filter(provider=provider.name, status=S.QUEUED).order_by("batch_id", "position", "id")
    return list(queued.values_list("pk", flat=True)[:limit])
