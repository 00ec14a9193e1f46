"""The stale sweep recognises dead workers by missed heartbeats (a few beats, not minutes), and never
takes a job from a live one."""

from datetime import timedelta

import pytest
from django.utils import timezone

from genhub.leases import lease_acquire
from jobs import services
from jobs.models import Job
from tests.jobs.factories import make_batch

pytestmark = pytest.mark.django_db
S = Job.Status


def test_the_stale_threshold_is_a_few_heartbeats_not_minutes(settings):
    assert settings.GENHUB_STALE_JOB_SECONDS <= 5 * settings.GENHUB_HEARTBEAT_SECONDS <= 60


def test_a_dispatched_job_whose_worker_task_was_lost_goes_back_without_using_an_attempt(user, settings):
    job = make_batch(user, provider="vastai").jobs.get()
    services.job_claim(job_id=job.pk, dispatch_token="lost-with-the-cluster")
    Job.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=settings.GENHUB_STALE_JOB_SECONDS + 1))

    assert services.jobs_sweep_stale(provider_name="vastai") == 1
    job.refresh_from_db()
    assert (job.status, job.attempts) == (S.QUEUED, 0)
    # The old task, delivered after Q_RETRY, finds nothing to do.
    assert not services.job_take_dispatch(job_id=job.pk, dispatch_token="lost-with-the-cluster")


def test_a_generating_job_whose_beats_stopped_is_requeued_with_its_attempt_counted(user, settings):
    job = make_batch(user, provider="vastai").jobs.get()
    services.job_claim(job_id=job.pk, dispatch_token="t")
    assert services.job_take_dispatch(job_id=job.pk, dispatch_token="t")
    assert services.job_note_remote(job_id=job.pk, claim=1, started=True, queue_position=None)  # on the GPU
    Job.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=settings.GENHUB_STALE_JOB_SECONDS + 1))

    assert services.jobs_sweep_stale() == 1
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error_code) == (S.QUEUED, 1, "worker_lost")


def test_a_job_still_waiting_for_the_gpu_when_its_worker_died_goes_back_without_using_an_attempt(user, settings):
    job = make_batch(user, provider="vastai").jobs.get()
    services.job_claim(job_id=job.pk, dispatch_token="t")
    assert services.job_take_dispatch(job_id=job.pk, dispatch_token="t")  # queued inside SwarmUI, not started
    Job.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=settings.GENHUB_STALE_JOB_SECONDS + 1))

    assert services.jobs_sweep_stale() == 1
    job.refresh_from_db()
    assert (job.status, job.attempts) == (S.QUEUED, 0)


def test_a_fal_job_lost_while_being_submitted_counts_its_attempt(user, settings):
    """The submit may have reached fal and been billed although its answer was lost."""
    job = make_batch(user, provider="fal").jobs.get()
    services.job_claim(job_id=job.pk)
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))

    assert services.jobs_sweep_stale() == 1
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error_code) == (S.QUEUED, 1, "worker_lost")


def test_a_job_handed_back_unrun_too_often_has_its_attempts_counted_again(user):
    job = make_batch(user, provider="vastai").jobs.get()
    for claim in range(1, services.MAX_UNRUN_HANDBACKS + 1):
        services.job_claim(job_id=job.pk)
        assert services.job_release_unrun(job_id=job.pk, claim=claim, code="connection_error", reason="gone")
        assert Job.objects.get(pk=job.pk).attempts == 0
    services.job_claim(job_id=job.pk)

    assert services.job_release_unrun(job_id=job.pk, claim=services.MAX_UNRUN_HANDBACKS + 1,
                                      code="connection_error", reason="the machine never takes it")
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error_code) == (S.QUEUED, 1, "connection_error")


def test_a_fal_job_being_submitted_by_a_live_pump_is_left_alone(user):
    job = make_batch(user, provider="fal").jobs.get()
    services.job_claim(job_id=job.pk)
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert lease_acquire(name="pump:fal")  # the pump that claimed it is alive (its lease is renewed)

    assert services.jobs_sweep_stale() == 0
    assert Job.objects.get(pk=job.pk).status == S.RUNNING
