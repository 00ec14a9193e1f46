"""The read-only GPU instance panel: what is rented now, and what happened to the ones before it."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils.module_loading import import_string

from gpu_instances import exposure, selectors, services, speed
from gpu_instances.models import GpuInstance

HISTORY_INSTANCES = 10
EVENTS_PER_INSTANCE = 30
# Events worth a second look: failed probes, errors, leaked instances, and moves into a bad state.
PROBLEM_KINDS = {"health", "error", "leak"}
PROBLEM_STATES = {GpuInstance.State.UNHEALTHY, GpuInstance.State.FAILED}
# Ends that are not failures: nothing "replaced" an instance an operator destroyed or a leak.
PLANNED_END_PREFIXES = ("operator", "leak")


def _instance_row(instance: GpuInstance, replaced_by: GpuInstance | None, user) -> dict:
    events = [{"event": event, "problem": event.kind in PROBLEM_KINDS or event.to_state in PROBLEM_STATES}
              for event in list(instance.events.all())[:EVENTS_PER_INSTANCE]]
    # Messages name the GPU's address; only staff see them whole (the objects are for display, never saved).
    for row in events:
        row["event"].message = exposure.shown(row["event"].message, user, instance)
    instance.end_reason = exposure.shown(instance.end_reason, user, instance)
    return {
        "instance": instance, "summary": services.instance_summary(instance), "events": events,
        "problems": sum(1 for row in events if row["problem"]), "replaced_by": replaced_by,
    }


def _failed(instance: GpuInstance) -> bool:
    return (not instance.is_active and bool(instance.end_reason)
            and not instance.end_reason.startswith(PLANNED_END_PREFIXES))


@login_required
def instance_panel(request):
    active = selectors.instance_active()
    history = list(selectors.instance_history(limit=HISTORY_INSTANCES))
    # Newest first: an instance that failed was replaced by the one rented right after it.
    rows = [_instance_row(instance, history[index - 1] if index and _failed(instance) else None, request.user)
            for index, instance in enumerate(history)]
    # Demand is the jobs app's to count; it is reached through the hook the orchestrator uses, so
    # this app still imports nothing from the layer above it.
    waiting = import_string(settings.GENHUB_GPU_HOOKS["demand"])()
    return render(request, "instance/panel.html", {
        "active": _instance_row(active, None, request.user) if active else None, "waiting": waiting,
        "history": [row for row in rows if row["instance"] != active],  # the active one is shown above
        "active_speed": _active_speed(active) if active and active.gpu_name else None,
        "speed_by_model": speed.speed_history(),
    })


def _active_speed(instance: GpuInstance) -> dict:
    """What the rented machine and its GPU model have measured, and how its self-test went."""
    if instance.qualified_at:
        qualification = {"passed": "passed its self-test", "skipped": "not tested (qualification is off)"}.get(
            instance.qualification, instance.qualification)
    elif instance.state == GpuInstance.State.READY:
        qualification = "running its self-test: no jobs until it passes"
    else:
        qualification = "self-test when it is ready"
    return {"qualification": qualification,
            "machine": speed.speed_history(machine_id=instance.machine_id) if instance.machine_id else [],
            "model": speed.speed_history(gpu_name=instance.gpu_name),
            "model_caption": f"Speed of all {instance.gpu_name} machines"}
