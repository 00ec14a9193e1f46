"""Reads about the rented GPU: the active instance and the history of what we paid for."""

from gpu_instances.models import GpuInstance


def instance_active() -> GpuInstance | None:
    return GpuInstance.objects.filter(state__in=GpuInstance.ACTIVE_STATES).order_by("-created_at").first()


def instance_history(*, limit: int = 10):
    return GpuInstance.objects.prefetch_related("events").order_by("-created_at")[:limit]
