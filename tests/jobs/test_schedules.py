import pytest
from django.core.management import call_command
from django_q.models import Schedule

from jobs.schedules import SCHEDULES

pytestmark = pytest.mark.django_db


def test_ensure_schedules_is_idempotent_and_keeps_next_run():
    call_command("ensure_schedules")
    first = {s.name: s.next_run for s in Schedule.objects.all()}

    call_command("ensure_schedules")

    assert {s.name: s.next_run for s in Schedule.objects.all()} == first
    assert set(first) == set(SCHEDULES)


def test_ensure_schedules_pauses_schedules_genhub_no_longer_defines():
    Schedule.objects.create(name="jobs.retired", func="jobs.tasks.pump_all", repeats=-1)
    call_command("ensure_schedules")
    assert Schedule.objects.get(name="jobs.retired").repeats == 0


@pytest.mark.django_db(transaction=True)
def test_ensure_schedules_run_by_several_deploys_at_once_leaves_one_schedule_of_each():
    """Two hosts deploying together both run `ensure_schedules` on an empty table: one row per name."""
    import threading

    from django.db import connection

    from jobs.schedules import schedules_ensure

    def deploy(barrier, errors):
        try:
            barrier.wait()
            schedules_ensure()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    for _round in range(5):
        Schedule.objects.all().delete()
        barrier, errors = threading.Barrier(4), []
        threads = [threading.Thread(target=deploy, args=(barrier, errors)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert sorted(Schedule.objects.values_list("name", flat=True)) == sorted(SCHEDULES)
