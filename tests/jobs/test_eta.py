"""The batch ETA: remaining GPU clips × measured seconds per clip, boot while no GPU is ready, fal's
turnaround per wave, and bounds from the measured spread."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from gpu_instances.models import GpuInstance
from jobs import eta
from jobs.models import Job
from tests.jobs.factories import make_batch

pytestmark = pytest.mark.django_db
S = Job.Status


def ready_instance(**fields):
    now = timezone.now()
    return GpuInstance.objects.create(label="genhub", state="ready", ready_at=now, **fields)


def history(user, instance, seconds: list[float], *, params=None):
    """Finished GPU clips with these generation times, on `instance`."""
    batch = make_batch(user, provider="vastai", count=len(seconds), params=params)
    now = timezone.now()
    for job, value in zip(batch.jobs.order_by("position"), seconds, strict=True):
        Job.objects.filter(pk=job.pk).update(status=S.SUCCEEDED, generation_seconds=value, instance=instance,
                                             started_at=now - timedelta(seconds=value), finished_at=now)
    return batch


def test_the_eta_is_the_remaining_clips_times_the_instances_measured_median(user):
    instance = ready_instance()
    history(user, instance, [9.0, 10.0, 11.0, 10.0, 10.0])
    batch = make_batch(user, provider="vastai", count=6)

    estimate = eta.batch_eta(batch)

    assert estimate.seconds == pytest.approx(60.0)
    assert estimate.low < estimate.at < estimate.high
    assert "10.0 s per clip measured (this GPU, clips of this size, 5 clips)" in estimate.basis


def test_a_generating_job_counts_only_its_remaining_share(user):
    instance = ready_instance()
    history(user, instance, [10.0] * 5)
    batch = make_batch(user, provider="vastai", count=3)
    first = batch.jobs.order_by("position").first()
    Job.objects.filter(pk=first.pk).update(status=S.RUNNING, progress=0.25, instance=instance)

    assert eta.batch_eta(batch).seconds == pytest.approx(27.5)  # 0.75 + 2 clips


def test_older_batches_ahead_in_the_gpu_queue_come_first(user):
    instance = ready_instance()
    history(user, instance, [10.0] * 5)
    make_batch(user, provider="vastai", count=4)  # older, waiting
    later = make_batch(user, provider="vastai", count=2)

    estimate = eta.batch_eta(later)
    assert estimate.seconds == pytest.approx(60.0)
    assert "after 4.0 of older batches" in estimate.basis


def test_without_a_ready_gpu_the_measured_boot_time_is_added(user):
    now = timezone.now()
    for minutes in (4, 5, 6):  # past instances booted in 4, 5 and 6 minutes
        old = GpuInstance.objects.create(label="old", state="destroyed", ready_at=now)
        GpuInstance.objects.filter(pk=old.pk).update(created_at=now - timedelta(minutes=minutes))
    history(user, None, [20.0] * 3)
    batch = make_batch(user, provider="vastai", count=3)

    estimate = eta.batch_eta(batch)
    assert estimate.seconds == pytest.approx(300 + 60, abs=1)
    assert "boot 300 s (median of 3 past boot(s))" in estimate.basis


def test_a_booting_gpu_counts_only_the_rest_of_its_boot(user):
    now = timezone.now()
    past = GpuInstance.objects.create(label="old", state="destroyed", ready_at=now)
    GpuInstance.objects.filter(pk=past.pk).update(created_at=now - timedelta(seconds=200))
    booting = GpuInstance.objects.create(label="genhub", state="loading")
    GpuInstance.objects.filter(pk=booting.pk).update(created_at=now - timedelta(seconds=150))
    history(user, None, [10.0] * 3)
    batch = make_batch(user, provider="vastai", count=1)

    assert eta.batch_eta(batch, now=now).seconds == pytest.approx(50 + 10, abs=1)


def test_with_nothing_measured_the_settings_are_used_with_wide_bounds(user, settings):
    settings.VAST_ESTIMATED_SECONDS_PER_CLIP = 30
    ready_instance()
    batch = make_batch(user, provider="vastai", count=4)

    estimate = eta.batch_eta(batch)
    assert estimate.seconds == 120
    assert (estimate.high - estimate.at).total_seconds() == pytest.approx(120)  # ×2 for a guess
    assert "VAST_ESTIMATED_SECONDS_PER_CLIP" in estimate.basis


def test_measured_bounds_narrow_with_more_clips_relative_to_the_total(user):
    instance = ready_instance()
    history(user, instance, [8.0, 9.0, 10.0, 10.0, 10.0, 11.0, 12.0, 10.0, 10.0, 10.0])
    speed = eta.gpu_seconds_per_clip(instance=instance, params={"num_frames": 17})
    few, many = eta.gpu_span(4, speed), eta.gpu_span(400, speed)
    assert (few[2] - few[0]) / few[0] > (many[2] - many[0]) / many[0]
    assert many[1] < many[0] < many[2]


def test_fal_jobs_take_their_measured_turnaround_per_wave(user, settings):
    settings.FAL_MAX_IN_FLIGHT = 4
    done = make_batch(user, provider="fal", count=3)
    now = timezone.now()
    for job in done.jobs.all():
        Job.objects.filter(pk=job.pk).update(status=S.SUCCEEDED, started_at=now - timedelta(seconds=40),
                                             finished_at=now)
    batch = make_batch(user, provider="fal", count=9)  # 3 waves of 4

    estimate = eta.batch_eta(batch)
    assert estimate.seconds == pytest.approx(120)
    assert "9 clip(s) on fal, 4 at a time, at fal 40 s per clip measured (3 clips)" in estimate.basis


def test_a_finished_batch_has_no_eta_and_the_api_says_null(user, api):
    batch = make_batch(user, provider="fal", count=1)
    assert api.get(f"/api/batches/{batch.uuid}/").json()["eta"]["seconds"] > 0
    batch.jobs.update(status=S.SUCCEEDED)
    assert eta.batch_eta(batch) is None
    assert api.get(f"/api/batches/{batch.uuid}/").json()["eta"] is None


def test_the_api_gives_the_eta_as_iso_times_with_bounds(user, api):
    instance = ready_instance()
    history(user, instance, [10.0] * 5)
    batch = make_batch(user, provider="vastai", count=2)
    body = api.get(f"/api/batches/{batch.uuid}/").json()["eta"]
    assert set(body) == {"at", "seconds", "low", "high", "basis"}
    assert body["seconds"] == 20 and body["low"] <= body["at"] <= body["high"]


def test_an_older_batchs_generating_job_counts_only_its_remaining_share(user):
    instance = ready_instance()
    history(user, instance, [10.0] * 5)
    older = make_batch(user, provider="vastai", count=2)
    Job.objects.filter(pk=older.jobs.order_by("position").first().pk).update(status=S.RUNNING, progress=0.5,
                                                                            instance=instance)
    later = make_batch(user, provider="vastai", count=1)

    estimate = eta.batch_eta(later)
    assert estimate.seconds == pytest.approx(25.0)  # 0.5 + 1 of the older batch, then its own clip
    assert "after 1.5 of older batches" in estimate.basis


def test_older_fal_batches_in_flight_come_first(user, settings):
    settings.FAL_MAX_IN_FLIGHT = 4
    settings.FAL_ESTIMATED_SECONDS_PER_CLIP = 30
    make_batch(user, provider="fal", count=6)  # older: queued on fal
    batch = make_batch(user, provider="fal", count=2)

    assert eta.batch_eta(batch).seconds == pytest.approx(60)  # 8 clips: 2 waves of 4


def test_it_reads_in_flight_counts_from_batch_counts(user):
    """A 10,000-job batch's ETA costs what an empty one's does: its counts and the older batches' come from
    BatchCounts, and only generating jobs (none here) are read from the jobs table."""
    ready_instance()
    make_batch(user, provider="fal", count=3)
    make_batch(user, provider="vastai", count=3)
    batch = make_batch(user, provider="vastai", count=4)
    Job.objects.filter(pk=batch.jobs.order_by("position").first().pk).update(provider="fal")

    with CaptureQueriesContext(connection) as captured:
        estimate = eta.batch_eta(batch)

    assert "3.0 clip(s) on the GPU after 3.0 of older batches" in estimate.basis
    assert "1 clip(s) on fal" in estimate.basis
    counted = [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"] and '"jobs_job"' in q["sql"]]
    assert counted == []
