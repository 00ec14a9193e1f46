"""The periodic tasks genhub needs, by name (the name is their identity; django-q2 has no unique key)."""

from django_q.models import Schedule

SCHEDULES = {
    "jobs.pump_all": dict(func="jobs.tasks.pump_all", schedule_type=Schedule.MINUTES, minutes=1, repeats=-1),
    "jobs.sweep_stale_jobs": dict(func="jobs.tasks.sweep_stale_jobs", schedule_type=Schedule.MINUTES, minutes=1,
                                  repeats=-1),
    "jobs.check_alerts": dict(func="jobs.tasks.check_alerts", schedule_type=Schedule.MINUTES, minutes=1, repeats=-1),
    "jobs.webhooks_tick": dict(func="jobs.tasks.webhooks_tick", schedule_type=Schedule.MINUTES, minutes=1,
                               repeats=-1),
    "gpu_instances.reconcile": dict(func="gpu_instances.tasks.reconcile", schedule_type=Schedule.MINUTES, minutes=1,
                                    repeats=-1),
}
PREFIXES = ("jobs.", "gpu_instances.")
# Any fixed number genhub alone uses: the transaction-scoped PostgreSQL advisory lock below.
ENSURE_LOCK_KEY = 0x67656E68  # "genh"


def _one_deploy_at_a_time() -> None:
    """Waits until no other `ensure_schedules` is inside its transaction (two hosts deploying at once).

    Row locks cannot do this: on an empty table there is no row to lock, so both would see no schedule
    and both would create one. The lock ends with the transaction. SQLite serialises writers already.
    """
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ENSURE_LOCK_KEY])


def schedules_ensure() -> list[tuple[str, str]]:
    """Creates or updates every schedule; pauses ones genhub no longer defines (their history stays).

    `next_run` is left alone on update so a redeploy does not shift or replay ticks.
    """
    from django.db import transaction

    report = []
    with transaction.atomic():
        _one_deploy_at_a_time()
        for name, fields in SCHEDULES.items():
            matches = list(Schedule.objects.select_for_update().filter(name=name).order_by("id"))
            if matches:
                Schedule.objects.filter(pk=matches[0].pk).update(**fields)
                # Duplicates can only come from an earlier non-idempotent setup; keep one.
                Schedule.objects.filter(pk__in=[s.pk for s in matches[1:]]).delete()
                report.append((name, "updated"))
            else:
                Schedule.objects.create(name=name, **fields)
                report.append((name, "created"))
        for schedule in Schedule.objects.exclude(name__in=list(SCHEDULES)).exclude(repeats=0):
            if schedule.name and schedule.name.startswith(PREFIXES):
                Schedule.objects.filter(pk=schedule.pk).update(repeats=0)
                report.append((schedule.name, "paused"))
    return report
