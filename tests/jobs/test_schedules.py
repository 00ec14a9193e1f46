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
