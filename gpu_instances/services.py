"""Facts about instances for operators: age, what they cost so far, how they are doing."""

from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from genhub.formatting import format_duration, usd
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


def instance_headline(instance: GpuInstance) -> str:
    """One line naming an instance for a person: `vast #12 · A100 SXM4 · $1.1208/h · ready`.

    Before vast has accepted the rental there is no id, GPU or price to show, so it says what is happening.
    """
    if instance.vast_id is None:
        if instance.state == GpuInstance.State.PROVISIONING:
            return "requested; renting one…"
        return f"never rented ({instance.state}{': ' + instance.end_reason if instance.end_reason else ''})"
    parts = [f"vast #{instance.vast_id}", instance.gpu_name or "GPU not reported yet"]
    if instance.dph_usd is not None:
        parts.append(f"{usd(instance.dph_usd)}/h")
    parts.append(instance.state)
    return " · ".join(parts)


def instance_report(instance: GpuInstance) -> list[tuple[str, str]]:
    """(label, value) rows for `instance_status`: everything an operator asks about the active instance."""
    total, attributed, overhead = instance_costs(instance)
    if instance.last_health_at is None:
        health = "not probed yet"
    else:
        verdict = "ok" if instance.last_health_ok else f"FAILING ({instance.health_failures} in a row)"
        health = f"{verdict} at {instance.last_health_at:%H:%M:%S} UTC"
    return [
        ("address", instance.base_url or "— (not booted yet)"),
        ("price", f"{usd(instance.dph_usd)}/h" if instance.dph_usd is not None else "— (not rented yet)"),
        ("age", format_duration(instance_age_seconds(instance))),
        ("billed so far", f"{usd(total)} (jobs {usd(attributed)}, overhead {usd(overhead)})"),
        ("last health", health),
        ("machine", str(instance.machine_id) if instance.machine_id else "—"),
        ("qualification", instance.qualification or ("self-test pending" if instance.is_active else "never tested")),
    ]


# Why an instance ended, from the reason the orchestrator recorded (`end_reason`). The first three are
# decisions; the rest are replacements: genhub gave up on the machine and rents another when work waits.
NOT_REPLACEMENTS = ("operator", "released", "leak")
END_CAUSES = (
    ("operator", "operator"),  # destroy_instance, the admin action
    ("released", "released"),  # budget cap, idle shutdown, no demand before renting
    ("leak", "leak"),  # carried our label, no record owned it
    ("unhealthy", "health"),  # sustained failed probes
    ("not ready after", "boot_deadline"),
    ("vast no longer knows", "vanished"),
    ("vast reports", "vast_reported_dead"),  # exited / offline, as vast's `show` said
    ("vast stopped the contract", "vast_stopped"),  # unschedulable or outbid
    ("container failed to start", "container_failed"),
)


def instance_end_cause(end_reason: str) -> str:
    for prefix, cause in END_CAUSES:
        if end_reason.startswith(prefix):
            return cause
    return "other"
