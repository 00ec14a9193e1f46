"""Spend control: cost arithmetic, budget caps, fallback to fal, idle shutdown — against the simulators."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from django_q.models import OrmQ

from gpu_instances.models import GpuInstance
from jobs import selectors, services
from jobs.costs import fal_cost, gpu_cost
from jobs.dispatch import pumps_restart
from jobs.models import BatchRun, Job
from jobs.spend import instance_billed, monthly_spend
from tests.jobs.factories import make_batch

S = Job.Status
pytestmark = pytest.mark.django_db


# --- arithmetic ---------------------------------------------------------------------------


@pytest.mark.parametrize("frames, resolution, expected", [
    (81, "480p", "0.2025"),  # 5.0625 video-seconds × $0.04
    (81, "720p", "0.4050"),
    (161, "720p", "0.8050"),
    (17, "580p", "0.0638"),  # 1.0625 × 0.06 = 0.06375 → rounds half up
])
def test_fal_cost_is_video_seconds_at_16_fps_times_the_resolution_price(frames, resolution, expected):
    assert fal_cost({"num_frames": frames, "resolution": resolution}) == Decimal(expected)


def test_gpu_cost_is_the_hourly_price_times_the_seconds_rounded_half_up():
    assert gpu_cost(dph_usd=Decimal("1.1208"), seconds=37.5) == Decimal("0.0117")  # 0.011675
    assert gpu_cost(dph_usd=Decimal("2.00"), seconds=3600) == Decimal("2.0000")


def test_an_instance_is_billed_only_for_its_time_inside_the_period():
    now = timezone.now()
    instance = GpuInstance.objects.create(label="x", state="destroyed", dph_usd=Decimal("1.80"))
    GpuInstance.objects.filter(pk=instance.pk).update(created_at=now - timedelta(hours=3),
                                                      destroyed_at=now - timedelta(hours=1))
    instance.refresh_from_db()

    assert instance_billed(instance, since=now - timedelta(hours=2), until=now) == Decimal("1.8000")
    assert instance_billed(instance, since=now - timedelta(hours=10), until=now) == Decimal("3.6000")


def test_monthly_spend_adds_fal_jobs_and_the_gpus_whole_billed_time(user):
    now = timezone.now()
    job = make_batch(user).jobs.get()
    Job.objects.filter(pk=job.pk).update(status=S.SUCCEEDED, finished_at=now, cost_usd=Decimal("0.2025"))
    instance = GpuInstance.objects.create(label="x", state="ready", dph_usd=Decimal("1.20"))
    GpuInstance.objects.filter(pk=instance.pk).update(created_at=now - timedelta(minutes=30))

    spend = monthly_spend(now)

    assert Decimal("0.8024") <= spend <= Decimal("0.8026")  # 0.2025 + half an hour at $1.20


def test_the_batch_shows_its_cost_what_the_other_provider_would_cost_and_the_saving(user):
    batch = make_batch(user, provider="vastai", count=2, params={"num_frames": 81, "resolution": "480p"})
    for job in batch.jobs.all():
        Job.objects.filter(pk=job.pk).update(status=S.SUCCEEDED, cost_usd=Decimal("0.0300"))

    comparison = selectors.batch_cost_comparison(batch)

    assert comparison.actual == Decimal("0.0600")
    assert (comparison.other_provider, comparison.other_estimate) == ("fal", Decimal("0.4050"))
    assert comparison.saving == Decimal("0.3450")


# --- caps ---------------------------------------------------------------------------------


def test_a_batch_cap_pauses_what_does_not_fit_and_raising_it_resumes(user, fal_sim, drain):
    # 17-frame 480p clips cost $0.0425 on fal: a $0.10 cap pays for two of five.
    batch = make_batch(user, count=5)
    BatchRun.objects.filter(pk=batch.pk).update(budget_usd=Decimal("0.10"))

    drain(until=lambda: not batch.jobs.filter(status__in=Job.ACTIVE).exists())

    assert batch.jobs.filter(status=S.SUCCEEDED).count() == 2
    paused = batch.jobs.filter(status=S.PAUSED)
    assert paused.count() == 3 and "batch budget $0.10 reached" in paused.first().paused_reason
    assert sum(fal_sim.submits.values()) == 2

    services.batch_set_budget(batch=batch, budget_usd=Decimal("1.00"))
    drain(until=lambda: batch.jobs.filter(status=S.SUCCEEDED).count() == 5)
    assert not batch.jobs.exclude(paused_reason="").exists()


def test_the_monthly_cap_pauses_work_and_releases_the_gpu(user, vast_sim, drain, settings):
    batch = make_batch(user, provider="vastai", count=2)
    drain(until=lambda: batch.jobs.filter(status=S.SUCCEEDED).count() == 2)
    instance = GpuInstance.objects.get(state=GpuInstance.State.READY)

    settings.GENHUB_MONTHLY_BUDGET_USD = monthly_spend()  # everything spent that may be
    second = make_batch(user, provider="vastai", count=2)
    drain(until=lambda: GpuInstance.objects.filter(pk=instance.pk, state=GpuInstance.State.DESTROYED).exists())

    assert set(second.jobs.values_list("status", flat=True)) == {S.PAUSED}
    instance.refresh_from_db()
    assert instance.end_reason.startswith("released")
    assert [r["destroyed"] for r in vast_sim.instance_records()] == [True]

    settings.GENHUB_MONTHLY_BUDGET_USD = Decimal("100")
    drain(until=lambda: second.jobs.filter(status=S.SUCCEEDED).count() == 2)
    assert GpuInstance.objects.filter(state=GpuInstance.State.READY).count() == 1  # a new one came up


# --- fallback -----------------------------------------------------------------------------


def test_a_job_falls_back_to_fal_after_k_failed_gpu_attempts(user, vast_sim, fal_sim, drain):
    batch = make_batch(user, provider="vastai")
    BatchRun.objects.filter(pk=batch.pk).update(fallback_policy="attempts", fallback_after=2)
    job = batch.jobs.get()
    drain(until=lambda: GpuInstance.objects.filter(state=GpuInstance.State.READY).exists())
    swarmui = vast_sim.instances[GpuInstance.objects.get(state="ready").vast_id].swarmui
    swarmui.fail_next_generation()
    swarmui.fail_next_generation()

    drain(until=lambda: Job.objects.filter(pk=job.pk, status__in=Job.TERMINAL).exists())

    job.refresh_from_db()
    assert (job.status, job.provider, job.fallback_from) == (S.SUCCEEDED, "fal", "vastai")
    assert "failed on the GPU" in job.fallback_reason
    assert job.cost_usd == fal_cost(job.params)
    assert sum(fal_sim.submits.values()) == 1


def test_jobs_fall_back_when_the_gpu_stays_unavailable(user, vast_sim_factory, fal_sim, drain):
    vast_sim_factory(offers=[])  # nothing to rent, ever
    batch = make_batch(user, provider="vastai", count=2)
    BatchRun.objects.filter(pk=batch.pk).update(fallback_policy="unrecoverable", fallback_after=5)
    drain(until=lambda: batch.jobs.filter(status=S.WAITING_FOR_GPU).count() == 2)
    assert not batch.jobs.filter(provider="fal").exists()  # not yet: 5 minutes have not passed
    six_minutes_ago = timezone.now() - timedelta(minutes=6)
    GpuInstance.objects.update(created_at=six_minutes_ago)
    batch.jobs.update(created_at=six_minutes_ago)

    drain(until=lambda: batch.jobs.filter(status=S.SUCCEEDED).count() == 2)

    assert set(batch.jobs.values_list("provider", "fallback_from")) == {("fal", "vastai")}
    assert "unavailable for 6 min" in batch.jobs.first().fallback_reason


# --- idle shutdown ---------------------------------------------------------------------------


def test_an_idle_gpu_is_released_and_a_new_job_brings_one_back(user, vast_sim, drain, settings):
    settings.GENHUB_IDLE_SHUTDOWN_MINUTES = 10
    first_batch = make_batch(user, provider="vastai")
    drain(until=lambda: first_batch.jobs.filter(status=S.SUCCEEDED).exists())
    instance = GpuInstance.objects.get(state=GpuInstance.State.READY)

    services_idle_for(instance, minutes=5)
    drain(until=lambda: True)
    from gpu_instances.orchestrator import VastAIOrchestrator

    VastAIOrchestrator().reconcile(max_seconds=0)
    instance.refresh_from_db()
    assert instance.state == GpuInstance.State.READY  # 5 idle minutes of 10: kept

    services_idle_for(instance, minutes=11)
    VastAIOrchestrator().reconcile(max_seconds=0)
    instance.refresh_from_db()
    assert instance.state == GpuInstance.State.DESTROYED and "idle" in instance.end_reason

    second_batch = make_batch(user, provider="vastai")
    drain(until=lambda: second_batch.jobs.filter(status=S.SUCCEEDED).exists())
    assert GpuInstance.objects.filter(state=GpuInstance.State.READY).exclude(pk=instance.pk).count() == 1


def test_idle_shutdown_is_off_by_default(user, vast_sim, drain):
    batch = make_batch(user, provider="vastai")
    drain(until=lambda: batch.jobs.filter(status=S.SUCCEEDED).exists())
    instance = GpuInstance.objects.get(state=GpuInstance.State.READY)
    services_idle_for(instance, minutes=24 * 60)

    from gpu_instances.orchestrator import VastAIOrchestrator

    VastAIOrchestrator().reconcile(max_seconds=0)
    instance.refresh_from_db()
    assert instance.state == GpuInstance.State.READY


def services_idle_for(instance, *, minutes):
    """Backdates the instance's last work, as if it had been idle for `minutes`."""
    then = timezone.now() - timedelta(minutes=minutes)
    GpuInstance.objects.filter(pk=instance.pk).update(ready_at=then)
    Job.objects.filter(instance=instance).update(finished_at=then)


def test_the_dry_run_warns_when_the_estimate_exceeds_a_cap(settings):
    from jobs.estimates import cap_warnings, estimate_batch
    from jobs.intake import UploadedFile, build_batch
    from providers.simulators.media import make_image

    settings.GENHUB_MONTHLY_BUDGET_USD = Decimal("0.05")
    files = [UploadedFile(f"{i}.png", make_image(color=(i, 9, 9))) for i in range(4)]
    spec = build_batch(provider="fal", prompt="p", files=files, params={"num_frames": 81}, budget_usd="0.50")

    warnings = cap_warnings(spec, estimate_batch(spec.items))

    # 4 clips × $0.2025 = $0.81: over the batch's $0.50 (2 fit) and the month's $0.05 (none fit).
    assert len(warnings) == 2
    assert "about 2 of 4 clips will run" in warnings[0]
    assert "about 0 of 4 clips will run this month" in warnings[1]


def test_paused_gpu_work_does_not_rent_a_gpu(user, vast_sim, drain, settings):
    """With every vastai job held back by a cap, nothing may be rented, however often the pumps run."""
    batch = make_batch(user, provider="vastai", count=2)
    BatchRun.objects.filter(pk=batch.pk).update(budget_usd=Decimal("0"))

    drain(until=lambda: batch.jobs.filter(status=S.PAUSED).count() == 2)
    for _ in range(3):  # scheduler minutes: pumps restart for paused work, reconcile runs
        pumps_restart()
        drain(until=lambda: not OrmQ.objects.exists(), timeout=10)

    assert vast_sim.instance_records() == []
    assert not GpuInstance.objects.filter(state__in=GpuInstance.ACTIVE_STATES).exists()


def test_a_gpu_request_whose_work_went_away_is_released_before_renting(user, vast_sim_factory):
    from gpu_instances.orchestrator import VastAIOrchestrator

    vast_sim_factory(offers=[])  # nothing can be rented while the work still exists
    batch = make_batch(user, provider="vastai")
    VastAIOrchestrator().reconcile(max_seconds=0)
    request = GpuInstance.objects.get(state=GpuInstance.State.PROVISIONING)

    services.batch_cancel(batch=batch)
    VastAIOrchestrator().reconcile(max_seconds=0)

    request.refresh_from_db()
    assert request.state == GpuInstance.State.DESTROYED and request.end_reason.startswith("released")


def test_a_gpu_released_long_ago_does_not_make_new_work_fall_back_at_once(user, vast_sim, settings):
    from gpu_instances.models import InstanceEvent
    from jobs.selectors import gpu_down_since

    old = GpuInstance.objects.create(label="genhub", state="destroyed", end_reason="released: idle")
    InstanceEvent.objects.create(instance=old, kind="state", from_state="ready", to_state="destroying")
    InstanceEvent.objects.filter(instance=old).update(at=timezone.now() - timedelta(days=2))
    batch = make_batch(user, provider="vastai")
    BatchRun.objects.filter(pk=batch.pk).update(fallback_policy="unrecoverable", fallback_after=10)

    assert services.jobs_fall_back_while_gpu_unavailable(provider_name="vastai") == 0
    assert (timezone.now() - gpu_down_since()).total_seconds() < 60  # since the job arrived, not 2 days
