"""Reads about the rented GPU: the active instance and the history of what we paid for."""

from gpu_instances.models import GpuInstance, InstanceEvent


def instance_active() -> GpuInstance | None:
    return GpuInstance.objects.filter(state__in=GpuInstance.ACTIVE_STATES).order_by("-created_at").first()


def instance_history(*, limit: int = 10):
    return GpuInstance.objects.prefetch_related("events").order_by("-created_at")[:limit]


def gpu_unavailable_since():
    """Since when no instance has been ready (None while one is): the end of the last ready period,
    or, if none was ever ready, when the first instance still pending was requested."""
    if GpuInstance.objects.filter(state=GpuInstance.State.READY).exists():
        return None
    last_ready_end = (InstanceEvent.objects.filter(from_state=GpuInstance.State.READY)
                      .order_by("-at").values_list("at", flat=True).first())
    if last_ready_end:
        return last_ready_end
    first_request = GpuInstance.objects.order_by("created_at").values_list("created_at", flat=True).first()
    return first_request


def vast_search_block():
    """(until, reason) while vast's daily search quota blocks renting, else None."""
    from django.utils import timezone

    from gpu_instances.models import OfferSearch

    row = OfferSearch.objects.filter(name="vast", blocked_until__gt=timezone.now()).first()
    return (row.blocked_until, row.blocked_reason) if row else None


def gpu_rental_blocked_until():
    """When renting can start again, while nothing is rented and the search quota blocks a new rental."""
    if GpuInstance.objects.filter(state__in=GpuInstance.ACTIVE_STATES, vast_id__isnull=False).exists():
        return None
    block = vast_search_block()
    return block[0] if block else None
