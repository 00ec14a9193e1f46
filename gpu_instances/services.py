"""Facts about instances for operators: age, what they cost so far, how they are doing."""

from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from gpu_instances.models import GpuInstance


def instance_age_seconds(instance: GpuInstance) -> float:
    end = instance.destroyed_at or timezone.now()
    return max(0.0, (end - instance.created_at).total_seconds())


def instance_cost_so_far(instance: GpuInstance) -> Decimal:
    """What vast bills for the instance: its hourly price from creation to destruction (or now)."""
    if instance.dph_usd is None:
        return Decimal("0")
    hours = Decimal(str(round(instance_age_seconds(instance), 3))) / Decimal(3600)
    return (instance.dph_usd * hours).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def instance_costs(instance: GpuInstance) -> tuple[Decimal, Decimal, Decimal]:
    """(billed so far, attributed to jobs, overhead): boot and idle time are the overhead."""
    total = instance_cost_so_far(instance)
    attributed = import_string(settings.GENHUB_GPU_HOOKS["attributed_cost"])(instance_id=instance.pk)
    return total, attributed, max(Decimal("0"), total - attributed)


def instance_summary(instance: GpuInstance) -> dict:
    total, attributed, overhead = instance_costs(instance)
    return {
        "vast_id": instance.vast_id,
        "state": instance.state,
        "gpu": instance.gpu_name or "?",
        "address": instance.base_url or "—",
        "dph_usd": instance.dph_usd,
        "age_seconds": round(instance_age_seconds(instance)),
        "cost_so_far_usd": total,
        "attributed_usd": attributed,
        "overhead_usd": overhead,
        "last_health": (f"{'ok' if instance.last_health_ok else 'FAILED'} at {instance.last_health_at:%H:%M:%S}"
                        if instance.last_health_at else "never"),
        "health_failures": instance.health_failures,
        "machine_id": instance.machine_id,
        "qualification": instance.qualification or ("self-test pending" if instance.is_active else "never tested"),
        "end_reason": instance.end_reason,
    }
