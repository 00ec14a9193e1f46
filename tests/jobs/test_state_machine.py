"""Job transitions: every legal move, the illegal ones refused, duplicates harmless."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import OrmQ

from jobs import services
from jobs.models import Job
from tests.jobs.factories import make_batch

S = Job.Status
pytestmark = pytest.mark.django_db


@pytest.fixture
def job(user):
    return make_batch(user).jobs.get()


def status_of(job):
    job.refresh_from_db()
    return job.status


def set_status(job, status, **fields):
    Job.objects.filter(pk=job.pk).update(status=status, **fields)
    job.refresh_from_db()


def test_creating_a_batch_enqueues_one_pump_task_not_one_per_job(user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        batch = make_batch(user, count=5)

    assert batch.jobs.filter(status=S.QUEUED).count() == 5
    assert [row.task["func"] for row in OrmQ.objects.all()] == ["jobs.tasks.pump"]


def test_claim_moves_queued_to_running_and_counts_the_attempt(job):
    assert services.job_claim(job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.attempts) == (S.RUNNING, 1)
    assert job.started_at and job.heartbeat_at


def test_a_duplicate_claim_is_a_noop(job):
    assert services.job_claim(job_id=job.pk)
    assert not services.job_claim(job_id=job.pk)
    job.refresh_from_db()
    assert job.attempts == 1


def test_a_duplicate_task_delivery_takes_the_dispatch_only_once(job):
    services.job_claim(job_id=job.pk, dispatch_token="tok")
    assert services.job_take_dispatch(job_id=job.pk, dispatch_token="tok")
    assert not services.job_take_dispatch(job_id=job.pk, dispatch_token="tok")


def test_a_cancelled_job_is_never_started(job):
    assert services.job_cancel(job=job)
    assert not services.job_claim(job_id=job.pk)
    assert status_of(job) == S.CANCELLED


def test_a_task_for_a_job_cancelled_after_dispatch_does_not_run(job):
    services.job_claim(job_id=job.pk, dispatch_token="tok")
    services.job_cancel(job=job)
    assert not services.job_take_dispatch(job_id=job.pk, dispatch_token="tok")


def test_success_only_from_running(job):
    assert not services.job_succeed(job_id=job.pk)
    services.job_claim(job_id=job.pk)
    assert services.job_succeed(job_id=job.pk)
    assert status_of(job) == S.SUCCEEDED
    assert not services.job_succeed(job_id=job.pk)


def test_a_transient_failure_requeues_while_attempts_remain(job):
    services.job_claim(job_id=job.pk)
    assert services.job_fail(job_id=job.pk, code="http_503", message="busy", permanent=False) == S.QUEUED
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error_code) == (S.QUEUED, 1, "http_503")


def test_a_transient_failure_fails_the_job_when_attempts_are_exhausted(job):
    for _ in range(job.max_attempts):
        services.job_claim(job_id=job.pk)
        last = services.job_fail(job_id=job.pk, code="http_503", message="busy", permanent=False)
    assert last == S.FAILED
    job.refresh_from_db()
    assert (job.status, job.attempts) == (S.FAILED, job.max_attempts)


def test_a_permanent_failure_fails_at_once(job):
    services.job_claim(job_id=job.pk)
    assert services.job_fail(job_id=job.pk, code="invalid_input", message="bad", permanent=True) == S.FAILED


def test_a_failure_report_for_a_job_no_longer_running_changes_nothing(job):
    services.job_cancel(job=job)
    assert services.job_fail(job_id=job.pk, code="x", message="late", permanent=False) is None
    assert status_of(job) == S.CANCELLED


@pytest.mark.parametrize("terminal", [S.SUCCEEDED, S.FAILED, S.CANCELLED])
def test_a_finished_job_cannot_be_cancelled(job, terminal):
    set_status(job, terminal)
    assert not services.job_cancel(job=job)
    assert status_of(job) == terminal


@pytest.mark.parametrize("state", [S.QUEUED, S.WAITING_FOR_GPU, S.RUNNING])
def test_any_unfinished_job_can_be_cancelled(job, state):
    set_status(job, state)
    assert services.job_cancel(job=job)
    assert status_of(job) == S.CANCELLED


@pytest.mark.parametrize("state", [S.QUEUED, S.WAITING_FOR_GPU, S.RUNNING, S.SUCCEEDED])
def test_only_failed_or_cancelled_jobs_can_be_retried(job, state):
    set_status(job, state)
    assert not services.job_retry(job=job)
    assert status_of(job) == state


def test_retry_gives_a_failed_job_fresh_attempts(job):
    set_status(job, S.FAILED, attempts=3, error_code="x", error_message="boom")
    assert services.job_retry(job=job)
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error_code) == (S.QUEUED, 0, "")


def test_cancelling_a_batch_leaves_finished_jobs_alone(user):
    batch = make_batch(user, count=3)
    first, second, third = batch.jobs.all()
    set_status(first, S.SUCCEEDED)
    set_status(second, S.RUNNING)

    assert services.batch_cancel(batch=batch) == 2
    assert [status_of(j) for j in (first, second, third)] == [S.SUCCEEDED, S.CANCELLED, S.CANCELLED]


def test_retrying_a_batch_requeues_only_failed_jobs(user):
    batch = make_batch(user, count=3)
    first, second, _ = batch.jobs.all()
    set_status(first, S.FAILED)
    set_status(second, S.SUCCEEDED)

    assert services.batch_retry_failed(batch=batch) == 1
    assert (status_of(first), status_of(second)) == (S.QUEUED, S.SUCCEEDED)


def test_the_sweep_requeues_a_running_job_whose_heartbeat_stopped(job, settings):
    services.job_claim(job_id=job.pk)
    old = timezone.now() - timedelta(seconds=settings.GENHUB_STALE_JOB_SECONDS + 5)
    Job.objects.filter(pk=job.pk).update(heartbeat_at=old)

    assert services.jobs_sweep_stale() == 1
    job.refresh_from_db()
    assert (job.status, job.error_code, job.attempts) == (S.QUEUED, "worker_lost", 1)


def test_the_sweep_fails_a_stale_job_without_attempts_left(job, settings):
    Job.objects.filter(pk=job.pk).update(status=S.RUNNING, attempts=job.max_attempts,
                                         heartbeat_at=timezone.now() - timedelta(hours=1))
    services.jobs_sweep_stale()
    assert status_of(job) == S.FAILED


def test_the_sweep_leaves_fresh_jobs_and_fal_jobs_the_poller_follows(user, settings):
    batch = make_batch(user, count=2)
    fresh, followed = batch.jobs.all()
    services.job_claim(job_id=fresh.pk)
    services.job_claim(job_id=followed.pk)
    Job.objects.filter(pk=followed.pk).update(external_id="req-1", heartbeat_at=timezone.now() - timedelta(hours=1))

    assert services.jobs_sweep_stale() == 0
    assert (status_of(fresh), status_of(followed)) == (S.RUNNING, S.RUNNING)


@pytest.mark.django_db(transaction=True)  # the beat writes from its own thread and connection
def test_a_worker_keeps_beating_for_a_job_that_reports_no_progress(job, settings):
    """A job queued inside SwarmUI behind another hears nothing; its worker's beat keeps the sweep away."""
    import time

    from jobs.worker_run import _Heartbeat

    settings.GENHUB_HEARTBEAT_SECONDS = 0.05
    services.job_claim(job_id=job.pk)
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))

    with _Heartbeat(job.pk, claim=1):
        time.sleep(0.3)

    job.refresh_from_db()
    assert timezone.now() - job.heartbeat_at < timedelta(seconds=5)


def test_a_late_report_from_an_attempt_given_up_on_never_touches_a_later_one(user):
    """Fallback and retry reset `attempts`; the claim counter never repeats, so the old GPU worker's
    report cannot hit the job's new fal attempt that happens to have the same attempt number."""
    job = make_batch(user, provider="vastai").jobs.get()
    services.job_claim(job_id=job.pk)
    old_claim = Job.objects.get(pk=job.pk).claims
    assert services.job_fall_back(job_id=job.pk, from_states=(S.RUNNING,), reason="instance lost")
    services.job_claim(job_id=job.pk)  # now on fal, attempt 1 again

    assert services.job_fail(job_id=job.pk, code="connection_error", message="late", permanent=False,
                             claim=old_claim) is None
    assert not services.job_succeed(job_id=job.pk, claim=old_claim)
    job.refresh_from_db()
    assert (job.status, job.provider, job.attempts) == (S.RUNNING, "fal", 1)
