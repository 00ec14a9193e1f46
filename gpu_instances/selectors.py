"""Reads about the rented GPU: the active instance and the history of what we paid for."""

import re
from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from genhub.formatting import format_duration
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


# --- what the GPU is doing, for people waiting on it (the batch page) -------------------------------

# Ends that were decided, not suffered: nothing "failed" when an operator, a leak sweep or a release did it.
PLANNED_END_PREFIXES = ("operator", "leak", "released")
TYPICAL_BOOT_SAMPLE = 20
# A failure longer ago than this before the current request is history, not what is being replaced.
REPLACEMENT_WINDOW = timedelta(minutes=10)
# Addresses are for staff and the instance panel only; a reason shown to a batch's owner loses them.
_ADDRESS = re.compile(r"\b(?:https?|wss?)://\S+|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")


def _without_addresses(text: str) -> str:
    return _ADDRESS.sub("[address]", text)


def typical_boot_seconds() -> float | None:
    """The median time from request to ready of the last instances that got there (None before any did)."""
    boots = sorted(
        (ready_at - created_at).total_seconds()
        for created_at, ready_at in GpuInstance.objects.filter(ready_at__isnull=False)
        .order_by("-created_at").values_list("created_at", "ready_at")[:TYPICAL_BOOT_SAMPLE])
    if not boots:
        return None
    middle = len(boots) // 2
    return boots[middle] if len(boots) % 2 else (boots[middle - 1] + boots[middle]) / 2


def _failed_predecessor(active: GpuInstance | None, now) -> GpuInstance | None:
    """The instance this one replaces, when that one ended in a failure just before it."""
    ended = GpuInstance.objects.exclude(state__in=GpuInstance.ACTIVE_STATES)
    if active is not None:
        ended = ended.filter(created_at__lt=active.created_at)
    last = ended.order_by("-created_at").first()
    if last is None or not last.end_reason or last.end_reason.startswith(PLANNED_END_PREFIXES):
        return None
    ended_at = last.destroyed_at or last.state_changed_at or last.created_at
    if ended_at < (active.created_at if active else now) - REPLACEMENT_WINDOW:
        return None
    return last


@dataclass(frozen=True)
class GpuActivity:
    phase: str  # renting, booting, loading, unhealthy, ready
    message: str  # one sentence for the owner of waiting work; never an address
    vast_id: int | None = None
    elapsed_seconds: int | None = None
    typical_seconds: int | None = None
    replacing: str = ""  # why the one before it was given up, when it was

    @property
    def ready(self) -> bool:
        return self.phase == "ready"


def gpu_activity(now=None) -> GpuActivity:
    """What the rented GPU is doing now, in words for someone whose jobs wait for it."""
    now = now or timezone.now()
    active = instance_active()
    if active is not None and active.state == GpuInstance.State.READY:
        return GpuActivity("ready", f"The GPU is ready (vast #{active.vast_id}, {active.gpu_name or 'GPU'}).",
                           vast_id=active.vast_id)
    predecessor = _failed_predecessor(active, now)
    replacing = ""
    if predecessor is not None:
        replacing = (f"Replacing vast #{predecessor.vast_id or '?'}, which failed: "
                     f"{_without_addresses(predecessor.end_reason)}.")
    typical = typical_boot_seconds()
    if active is None:
        return GpuActivity("renting", " ".join(filter(None, [
            replacing, "No GPU is rented yet: genhub rents one within a minute when vast.ai work waits."])),
            replacing=replacing)

    elapsed = (now - active.created_at).total_seconds()
    so_far = f"{format_duration(elapsed)} so far" + (f", typically {format_duration(typical)}" if typical else "")
    where = f"vast #{active.vast_id}" if active.vast_id else "a vast.ai machine"
    if active.gpu_name:
        where += f", {active.gpu_name}"
    if active.state == GpuInstance.State.PROVISIONING:
        phase, text = "renting", f"Renting a GPU: looking for the cheapest matching vast.ai offer ({so_far})."
    elif active.state == GpuInstance.State.LOADING and not active.base_url:
        phase, text = "booting", f"Booting the GPU ({where}): vast.ai is starting the machine and its image ({so_far})."
    elif active.state == GpuInstance.State.LOADING:
        phase, text = "loading", f"Loading models on the GPU ({where}): SwarmUI is starting up ({so_far})."
    else:  # unhealthy: taken out of rotation, not yet given up on
        phase = "unhealthy"
        text = (f"The GPU ({where}) is failing its health checks ({active.health_failures} in a row): genhub "
                "gives it a moment to recover and replaces it if it does not.")
    return GpuActivity(phase, " ".join(filter(None, [replacing if phase != "unhealthy" else "", text])),
                       vast_id=active.vast_id, elapsed_seconds=round(elapsed),
                       typical_seconds=round(typical) if typical else None, replacing=replacing)


def vast_search_block():
    """(until, reason) while vast's daily search quota blocks renting, else None."""
    from django.utils import timezone

    from gpu_instances.models import OfferSearch

    row = OfferSearch.objects.filter(name="vast", blocked_until__gt=timezone.now()).first()
    return (row.blocked_until, row.blocked_reason) if row else None


def gpu_rental_blocked_until():
    """When renting can start again, while nothing is rented and the search quota blocks a new rental (the
    last offer list found is used up: until then a rental is still tried from it)."""
    from gpu_instances.offers import offers_left_to_try

    if GpuInstance.objects.filter(state__in=GpuInstance.ACTIVE_STATES, vast_id__isnull=False).exists():
        return None
    if offers_left_to_try():
        return None
    block = vast_search_block()
    return block[0] if block else None
