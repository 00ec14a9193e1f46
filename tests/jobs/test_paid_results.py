"""Paid results are never thrown away: a clip that cannot be stored (a real full disk) is kept,
stored once storage works again, and never generated again; a failing disk holds new paid work."""

import io
import os

import av
import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from jobs.alerts import alerts_check
from jobs.costs import fal_cost
from jobs.dispatch import provider_pump
from jobs.models import Alert, Job
from tests.jobs.factories import make_batch

S = Job.Status
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def quick_pump(settings):
    settings.GENHUB_PUMP_SECONDS = 0  # one pass per call: the test steps through
    settings.FAL_POLL_INTERVAL = 0.05
    settings.GENHUB_STORE_RETRY_SECONDS = 0
    settings.GENHUB_STORAGE_MIN_FREE_MB = 0


def pump_until(predicate, *, passes=200):
    import time

    for _ in range(passes):
        provider_pump(provider_name="fal")
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("the pump did not get there")


def files_under(root, folder):
    path = root / folder
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def open_alert_kinds():
    return set(Alert.objects.filter(resolved_at__isnull=True).values_list("kind", flat=True))


def test_a_result_that_cannot_be_stored_is_kept_and_stored_later_without_generating_it_again(
        user, fal_sim, small_disk, media_root):
    job = make_batch(user).jobs.get()
    small_disk.fill(leave=8 * 1024)  # less than one clip: its write starts, then the disk is full

    pump_until(lambda: Job.objects.get(pk=job.pk).status == S.STORING)

    job.refresh_from_db()
    assert files_under(media_root, "outputs") == [] and files_under(media_root, "posters") == []  # no partial file
    assert os.path.getsize(job.pending_result["spool"]) > 8 * 1024
    assert "No space left on device" in job.pending_result["error"]
    assert job.cost_usd == fal_cost(job.params) and job.wasted_usd == 0  # paid, and counted at once
    assert "kept" in job.error_message
    assert open_alert_kinds() == {Alert.Kind.STORAGE_FAILING}

    provider_pump(provider_name="fal")  # still full: stays kept, nothing new is generated
    assert Job.objects.get(pk=job.pk).status == S.STORING

    small_disk.free()
    pump_until(lambda: Job.objects.get(pk=job.pk).status == S.SUCCEEDED)

    job.refresh_from_db()
    with job.output_video.open("rb") as handle, av.open(io.BytesIO(handle.read())) as container:
        assert sum(1 for _ in container.decode(video=0)) == 17
    assert (job.attempts, job.video_frames, job.pending_result, job.error_message) == (1, 17, {}, "")
    assert sum(fal_sim.submits.values()) == 1
    assert job.cost_usd == fal_cost(job.params) and job.wasted_usd == 0
    assert not list((media_root.parent / "media-pending").iterdir())  # the spool is gone
    assert open_alert_kinds() == set()


def test_a_full_disk_holds_new_paid_work_until_storage_works_again(user, fal_sim, small_disk, settings):
    settings.FAL_MAX_IN_FLIGHT = 1
    batch = make_batch(user, count=3)
    small_disk.fill()

    pump_until(lambda: batch.jobs.filter(status=S.STORING).exists())
    for _ in range(5):
        provider_pump(provider_name="fal")

    assert sorted(batch.jobs.values_list("status", flat=True)) == [S.QUEUED, S.QUEUED, S.STORING]
    assert sum(fal_sim.submits.values()) == 1  # the other two were not bought while nothing can be stored
    assert "storage_failing" in alerts_check()

    small_disk.free()
    pump_until(lambda: batch.jobs.filter(status=S.SUCCEEDED).count() == 3)

    assert sum(fal_sim.submits.values()) == 3
    assert [job.cost_usd for job in batch.jobs.all()] == [fal_cost(batch.params)] * 3
    assert "storage_failing" not in alerts_check() and open_alert_kinds() == set()


def test_a_kept_result_is_retried_soon_then_less_often_so_a_brief_full_disk_does_not_hold_dispatch_long(
        user, fal_sim, small_disk, settings):
    settings.GENHUB_STORE_RETRY_SECONDS = 800  # the longest wait; the first retries come much sooner
    job = make_batch(user).jobs.get()
    small_disk.fill()

    def waits_after_this_pump():
        """(seconds from this pump to the next retry it scheduled, failed tries so far)."""
        before = timezone.now()
        pump_until(lambda: Job.objects.get(pk=job.pk).status == S.STORING)
        after = timezone.now()
        pending = Job.objects.get(pk=job.pk).pending_result
        retry_at = parse_datetime(pending["retry_at"])
        return (retry_at - after).total_seconds(), (retry_at - before).total_seconds(), pending["tries"]

    def make_due():  # as if the wait had passed, without waiting for it
        pending = Job.objects.get(pk=job.pk).pending_result
        Job.objects.filter(pk=job.pk).update(pending_result={**pending, "retry_at": timezone.now().isoformat()})

    waits = [waits_after_this_pump()]
    for _ in range(4):  # still full at every retry
        make_due()
        waits.append(waits_after_this_pump())

    assert [tries for *_, tries in waits] == [0, 1, 2, 3, 4]
    for (low, high, _), expected in zip(waits, [100, 200, 400, 800, 800], strict=True):
        assert low <= expected <= high  # 1/8 of the interval first, doubling, then the interval itself
    assert sum(fal_sim.submits.values()) == 1

    small_disk.free()
    make_due()
    provider_pump(provider_name="fal")
    assert Job.objects.get(pk=job.pk).status == S.SUCCEEDED and sum(fal_sim.submits.values()) == 1


def test_a_kept_result_is_stored_at_the_first_pass_after_the_disk_gains_room_whatever_its_backoff(
        user, fal_sim, small_disk, settings):
    settings.GENHUB_STORE_RETRY_SECONDS = 3600  # its next try would be many minutes away
    job = make_batch(user).jobs.get()
    small_disk.fill()
    pump_until(lambda: Job.objects.get(pk=job.pk).status == S.STORING)
    provider_pump(provider_name="fal")
    assert Job.objects.get(pk=job.pk).status == S.STORING  # still full: the backoff holds

    small_disk.free()
    provider_pump(provider_name="fal")

    assert Job.objects.get(pk=job.pk).status == S.SUCCEEDED and sum(fal_sim.submits.values()) == 1


def test_a_kept_result_that_failed_with_room_to_spare_keeps_its_backoff(user, fal_sim, settings, monkeypatch):
    """Not a full disk (say, a permission error): more free space than at its failure is no reason to
    try again before its time."""
    from jobs import artifacts, pending_results

    settings.GENHUB_STORE_RETRY_SECONDS = 3600
    job = make_batch(user).jobs.get()
    real_store = artifacts.store_output
    monkeypatch.setattr(artifacts, "store_output", lambda **kwargs: (_ for _ in ()).throw(PermissionError("denied")))
    pump_until(lambda: Job.objects.get(pk=job.pk).status == S.STORING)
    pending = Job.objects.get(pk=job.pk).pending_result
    monkeypatch.setattr(artifacts, "store_output", real_store)
    # Some space came free, though less than the clip: the disk was never what stopped it.
    monkeypatch.setattr(pending_results, "media_free_bytes", lambda: pending["free_bytes"] + pending["bytes"] - 1)

    provider_pump(provider_name="fal")

    assert Job.objects.get(pk=job.pk).status == S.STORING


def test_when_even_the_spool_is_full_the_clip_is_fetched_again_from_fal_not_generated(
        user, fal_sim, small_disk, settings, media_root):
    settings.GENHUB_PENDING_RESULTS_DIR = str(media_root / "pending")  # on the same full disk
    job = make_batch(user).jobs.get()
    small_disk.fill()

    pump_until(lambda: Job.objects.get(pk=job.pk).status == S.STORING)
    job.refresh_from_db()
    assert job.pending_result["spool"] == "" and job.pending_result["source"]["video_url"].startswith(fal_sim.url)

    small_disk.free()
    pump_until(lambda: Job.objects.get(pk=job.pk).status == S.SUCCEEDED)

    downloads = [p for m, p in fal_sim.calls if m == "GET" and p.startswith("/files/")]
    assert len(downloads) == 2  # the first download, then the re-fetch of the same file
    assert sum(fal_sim.submits.values()) == 1


def test_dispatch_waits_while_media_has_less_free_space_than_the_minimum(user, fal_sim, settings):
    settings.GENHUB_STORAGE_MIN_FREE_MB = 10 ** 9  # more than any disk has
    job = make_batch(user).jobs.get()

    provider_pump(provider_name="fal")
    problems = alerts_check()

    assert Job.objects.get(pk=job.pk).status == S.QUEUED and not fal_sim.submits
    assert "storage_failing" in problems
    assert "GENHUB_STORAGE_MIN_FREE_MB" in Alert.objects.get(key="storage_failing").message

    settings.GENHUB_STORAGE_MIN_FREE_MB = 0
    pump_until(lambda: Job.objects.get(pk=job.pk).status == S.SUCCEEDED)
    assert "storage_failing" not in alerts_check()


def test_a_job_cancelled_while_its_clip_waits_books_the_clip_as_waste_and_drops_the_spool(
        user, fal_sim, small_disk, api):
    from jobs import services

    batch = make_batch(user)
    job = batch.jobs.get()
    small_disk.fill()
    pump_until(lambda: Job.objects.get(pk=job.pk).status == S.STORING)
    spool = Job.objects.get(pk=job.pk).pending_result["spool"]

    services.job_cancel(job=Job.objects.get(pk=job.pk))
    provider_pump(provider_name="fal")

    job.refresh_from_db()
    assert (job.status, job.pending_result) == (S.CANCELLED, {})
    assert job.cost_usd == job.wasted_usd == fal_cost(job.params)
    assert not os.path.exists(spool)
    assert api.get(f"/api/batches/{batch.uuid}/").json()["wasted_usd"] == str(fal_cost(job.params))


def test_a_kept_clip_that_is_gone_everywhere_fails_as_lost_and_counts_as_waste(
        user, fal_sim, small_disk, settings, media_root):
    settings.GENHUB_PENDING_RESULTS_DIR = str(media_root / "pending")  # the spool cannot be written either
    job = make_batch(user).jobs.get()
    small_disk.fill()
    pump_until(lambda: Job.objects.get(pk=job.pk).status == S.STORING)
    fal_sim.requests.pop(Job.objects.get(pk=job.pk).external_id)  # fal's copy expired: its URL answers 404

    small_disk.free()
    pump_until(lambda: Job.objects.get(pk=job.pk).status == S.FAILED)

    job.refresh_from_db()
    assert job.error_code == "result_lost" and "no longer available" in job.error_message
    assert job.cost_usd == job.wasted_usd == fal_cost(job.params)
    assert sum(fal_sim.submits.values()) == 1  # failed, never silently bought again
