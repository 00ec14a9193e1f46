"""The messy GPU faults, step by step against the simulated vast.ai and SwarmUI over real HTTP: vast's
`offline` blips under the health hysteresis, and the progress watchdog's ladder for a wedged SwarmUI."""

from datetime import timedelta

import pytest
from django.utils import timezone

from gpu_instances.models import GpuInstance
from gpu_instances.orchestrator import VastAIOrchestrator
from jobs.gpu_watch import instance_progress, stall_limit_seconds
from jobs.models import Job
from providers.vastai import Instance
from tests.gpu_instances.test_reconcile import ready_instance, reconcile_until
from tests.jobs.factories import make_batch

State = GpuInstance.State
S = Job.Status


@pytest.fixture
def batch(user):
    return make_batch(user, provider="vastai", count=2)


@pytest.fixture
def instance(vast_sim, batch):
    reconcile_until(ready_instance)
    return ready_instance()


def step():
    return VastAIOrchestrator().step()[0]


def events(instance, kind):
    return list(instance.events.filter(kind=kind).order_by("at", "id").values_list("message", flat=True))


# --- vast statuses ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["offline", "unknown", "created", "loading"])
def test_doubtful_vast_statuses_are_not_death(status):
    remote = Instance.from_api({"id": 1, "actual_status": status, "intended_status": "running",
                                "cur_state": "running", "next_state": "running", "status_msg": "success"})
    assert remote.dead_reason is None
    assert remote.doubt_reason == f"vast reports actual_status={status}"


def test_exited_stays_dead():
    remote = Instance.from_api({"id": 1, "actual_status": "exited", "status_msg": "exit 137"})
    assert remote.dead_reason.startswith("vast reports actual_status=exited")


@pytest.mark.django_db
def test_an_offline_blip_while_swarmui_answers_keeps_the_instance_working(vast_sim, instance, settings):
    settings.VAST_HEALTH_FAILURES = 3
    vast_sim.offline(instance.vast_id, shows=2)

    first, second = step(), step()
    instance.refresh_from_db()
    assert instance.state == State.READY and instance.health_failures == 2, (first, second)
    assert "offline" in first and "offline" in second
    assert len([m for m in events(instance, "health") if "actual_status=offline" in m]) == 2

    assert step() == "healthy"
    instance.refresh_from_db()
    assert (instance.state, instance.health_failures) == (State.READY, 0)
    assert GpuInstance.objects.count() == 1 and len(vast_sim.instance_records()) == 1


@pytest.mark.django_db
def test_sustained_offline_replaces_the_instance_under_the_hysteresis(vast_sim, instance):
    vast_sim.offline(instance.vast_id)  # until further notice

    reconcile_until(lambda: (ready := ready_instance()) is not None and ready.pk != instance.pk, timeout=20)

    instance.refresh_from_db()
    assert instance.state == State.DESTROYED
    assert "failed probes" in instance.end_reason and "actual_status=offline" in instance.end_reason


# --- the progress watchdog ----------------------------------------------------------------------


def place_running(batch, instance, *, quiet_seconds: float):
    """The batch's jobs run on the instance, their last progress `quiet_seconds` ago."""
    moved = timezone.now() - timedelta(seconds=quiet_seconds)
    batch.jobs.update(status=S.RUNNING, attempts=1, claims=1, instance=instance, started_at=moved,
                      heartbeat_at=timezone.now(), progress_at=moved, progress=0.3)


@pytest.fixture
def stall_after(settings):
    settings.SWARMUI_STALL_SECONDS = 5
    settings.SWARMUI_STALL_FLOOR_SECONDS = 1  # the cold-start allowance after a step
    return 5


@pytest.mark.django_db
def test_progress_within_the_limit_is_no_stall(vast_sim, batch, instance, stall_after):
    place_running(batch, instance, quiet_seconds=stall_after - 3)

    assert step() == "healthy"
    assert vast_sim._swarmui(instance.vast_id).interrupts == []


@pytest.mark.django_db
def test_a_first_stall_interrupts_swarmui_and_requeues_without_using_an_attempt(vast_sim, batch, instance,
                                                                                 stall_after):
    place_running(batch, instance, quiet_seconds=stall_after + 3)

    outcome = step()

    assert outcome.startswith("unhealthy") and "stall 1" in outcome
    swarm = vast_sim._swarmui(instance.vast_id)
    assert [other for _, other in swarm.interrupts] == [True]  # InterruptAll over every session
    assert [(job.status, job.attempts, job.instance_id) for job in batch.jobs.all()] == [(S.QUEUED, 0, None)] * 2
    instance.refresh_from_db()
    assert instance.stall_count == 1 and instance.state == State.UNHEALTHY
    (stall,) = events(instance, "stall")
    assert "no generation progress for" in stall and "InterruptAll" in stall
    # A stalled queue is a failed probe although every status route answers ...
    assert instance.health_failures == 1 and instance.last_health_ok is False
    # ... and the instance is back in rotation at the next healthy probe.
    assert step() == "healthy"
    instance.refresh_from_db()
    assert instance.state == State.READY


@pytest.mark.django_db
def test_a_second_stall_restarts_the_backend_and_waits_for_it_to_run(vast_sim, batch, instance, stall_after):
    swarm = vast_sim._swarmui(instance.vast_id)
    swarm.restart_seconds = 1.0
    place_running(batch, instance, quiet_seconds=stall_after + 3)
    step()
    step()  # healthy again
    place_running(batch, instance, quiet_seconds=stall_after + 3)
    # The clock of a new stall runs from the last step taken, not from the old progress.
    GpuInstance.objects.filter(pk=instance.pk).update(last_stall_at=timezone.now() - timedelta(seconds=stall_after + 3))

    assert "stall 2" in step()

    assert swarm.backend_restarts == 1
    instance.refresh_from_db()
    assert instance.state == State.UNHEALTHY and instance.backend_restart_at is not None
    assert [job.status for job in batch.jobs.all()] == [S.QUEUED] * 2
    reconcile_until(lambda: GpuInstance.objects.get(pk=instance.pk).state == State.READY, timeout=15)
    instance.refresh_from_db()
    assert instance.backend_restart_at is None
    assert any("backend running again" in e.message for e in instance.events.filter(kind="state"))
    assert "RestartBackends" in events(instance, "stall")[-1]


@pytest.mark.django_db
def test_a_third_stall_replaces_the_instance_and_avoids_its_machine(vast_sim, batch, instance, stall_after):
    GpuInstance.objects.filter(pk=instance.pk).update(
        stall_count=2, last_stall_at=timezone.now() - timedelta(seconds=stall_after + 3))
    place_running(batch, instance, quiet_seconds=stall_after + 3)

    assert step().startswith("replaced: stalled 3 times")

    instance.refresh_from_db()
    assert instance.state == State.DESTROYED and "stalled 3 times" in instance.end_reason
    assert [job.status for job in batch.jobs.all()] == [S.QUEUED] * 2
    reconcile_until(lambda: (ready := ready_instance()) is not None and ready.pk != instance.pk, timeout=15)
    assert ready_instance().machine_id != instance.machine_id


@pytest.mark.django_db
def test_after_a_step_the_next_stall_allows_for_a_cold_model_load(vast_sim, batch, instance, settings):
    settings.SWARMUI_STALL_SECONDS = 5
    settings.SWARMUI_STALL_FLOOR_SECONDS = 90
    GpuInstance.objects.filter(pk=instance.pk).update(
        stall_count=1, last_stall_at=timezone.now() - timedelta(seconds=60))
    place_running(batch, instance, quiet_seconds=60)  # past the limit, within limit + floor

    assert step() == "healthy"
    assert vast_sim._swarmui(instance.vast_id).backend_restarts == 0


@pytest.mark.django_db
def test_a_healthy_generation_puts_the_ladder_back_at_its_first_step(vast_sim, batch, instance, stall_after):
    GpuInstance.objects.filter(pk=instance.pk).update(
        stall_count=1, last_stall_at=timezone.now() - timedelta(seconds=stall_after + 5))
    first, second = batch.jobs.all()
    Job.objects.filter(pk=first.pk).update(status=S.SUCCEEDED, instance=instance, finished_at=timezone.now()
                                           - timedelta(seconds=stall_after + 2), generation_seconds=1.0)
    moved = timezone.now() - timedelta(seconds=stall_after + 3)
    Job.objects.filter(pk=second.pk).update(status=S.RUNNING, attempts=1, claims=1, instance=instance,
                                            started_at=moved, progress_at=moved, heartbeat_at=timezone.now())

    assert "stall 1" in step()

    assert vast_sim._swarmui(instance.vast_id).backend_restarts == 0
    assert "starts again from its first step" in events(instance, "stall")[0]


@pytest.mark.django_db
def test_the_stall_limit_comes_from_the_measured_time_per_step_with_a_floor(user, instance, settings):
    settings.SWARMUI_STALL_SECONDS = 0
    settings.SWARMUI_STALL_FLOOR_SECONDS = 90
    settings.SWARMUI_STALL_FACTOR = 5
    small = {"width": 832, "height": 480, "num_frames": 81, "steps": 8}
    assert stall_limit_seconds(instance_id=instance.pk, params_list=[small]) == 90  # nothing measured yet

    done = make_batch(user, provider="vastai", count=3)
    done.jobs.update(status=S.SUCCEEDED, instance=instance, params=small, generation_seconds=240.0,
                     finished_at=timezone.now())  # 30 s per step
    assert stall_limit_seconds(instance_id=instance.pk, params_list=[small]) == pytest.approx(150)
    big = {**small, "width": 1280, "height": 720}  # a step takes 1280*720/(832*480) ≈ 2.3 × as long
    assert stall_limit_seconds(instance_id=instance.pk, params_list=[small, big]) == pytest.approx(
        150 * 1280 * 720 / (832 * 480))
    fast = {**small, "steps": 40}  # 6 s per step: the floor holds
    done.jobs.update(params=fast)
    assert stall_limit_seconds(instance_id=instance.pk, params_list=[fast]) == 90


@pytest.mark.django_db
def test_a_job_that_just_finished_moves_the_queue_for_the_one_waiting_behind_it(batch, instance):
    first, second = batch.jobs.all()
    long_ago = timezone.now() - timedelta(minutes=10)
    Job.objects.filter(pk=first.pk).update(status=S.SUCCEEDED, instance=instance, finished_at=timezone.now())
    Job.objects.filter(pk=second.pk).update(status=S.RUNNING, instance=instance, started_at=long_ago,
                                            progress_at=long_ago)

    progress = instance_progress(instance_id=instance.pk)

    assert progress.running == 1
    assert (timezone.now() - progress.last_moved_at).total_seconds() < 60


@pytest.mark.django_db
def test_an_instance_that_answers_again_works_while_vast_still_says_offline(vast_sim, instance):
    VastAIOrchestrator().report_trouble(instance, "a job's call timed out")
    vast_sim.offline(instance.vast_id, shows=1)

    step()

    instance.refresh_from_db()
    assert instance.state == State.READY and instance.health_failures == 1
