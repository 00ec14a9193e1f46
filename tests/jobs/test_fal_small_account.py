"""fal on a small account: fal's own queue, result fetches that fail after COMPLETED, clips that
contradict the request. The pump in-process against the simulated fal over real HTTP."""

import pytest

from jobs.costs import fal_cost
from jobs.dispatch import provider_pump
from jobs.models import Job
from tests.conftest import wait_for
from tests.jobs.factories import make_batch

S = Job.Status
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def quick_pump(settings):
    settings.GENHUB_PUMP_SECONDS = 20
    settings.FAL_POLL_INTERVAL = 0.05


def file_gets(fal_sim, job):
    path = f"/files/{job.external_id}/output.mp4"
    return sum(1 for method, called in fal_sim.calls if method == "GET" and called == path)


def test_time_in_fals_own_queue_never_counts_towards_the_deadline(user, fal_sim, settings):
    # One request at a time, 0.4 s each: the last of 10 waits about 4 s in fal's queue, past a 3 s deadline
    # that a deadline counted from the claim would cancel.
    fal_sim.concurrency, fal_sim.queue_seconds, fal_sim.run_seconds = 1, 0.0, 0.4
    settings.FAL_JOB_DEADLINE_SECONDS = 3
    batch = make_batch(user, count=10)

    # Pump passes until the batch is done: on a loaded machine one pump's GENHUB_PUMP_SECONDS may not be enough.
    wait_for(lambda: provider_pump(provider_name="fal") and not batch.jobs.filter(status__in=Job.ACTIVE).exists(),
             timeout=120, interval=0, message="the batch to finish")

    jobs = list(batch.jobs.all())
    assert [job.status for job in jobs] == [S.SUCCEEDED] * 10
    assert [job.attempts for job in jobs] == [1] * 10
    assert sum(fal_sim.submits.values()) == 10 and not any(r["cancelled"] for r in fal_sim.requests.values())
    last = jobs[-1]
    assert last.remote_started_at and last.remote_started_at > last.started_at
    assert fal_sim.max_running == 1


def test_a_request_running_past_the_deadline_since_it_started_is_cancelled_and_retried(user, fal_sim, settings):
    fal_sim.queue_seconds, fal_sim.run_seconds = 0.0, 60
    settings.FAL_JOB_DEADLINE_SECONDS = 0
    settings.GENHUB_PUMP_SECONDS = 0
    job = make_batch(user).jobs.get()

    provider_pump(provider_name="fal")  # submits, sees IN_PROGRESS: the deadline starts now
    job.refresh_from_db()
    assert job.status == S.RUNNING and job.remote_started_at
    provider_pump(provider_name="fal")  # past it: cancelled, and its freed slot refilled in the same pass

    job.refresh_from_db()
    first, second = fal_sim.requests.values()
    assert first["cancelled"] and not second["cancelled"]
    assert (job.status, job.attempts, job.external_id) == (S.RUNNING, 2, second["id"])


def test_a_waiting_job_shows_its_place_in_fals_queue_in_the_api(user, fal_sim, settings, api):
    fal_sim.concurrency, fal_sim.queue_seconds, fal_sim.run_seconds = 1, 0.0, 60
    settings.GENHUB_PUMP_SECONDS = 0
    batch = make_batch(user, count=3)

    provider_pump(provider_name="fal")
    provider_pump(provider_name="fal")

    rows = api.get(f"/api/batches/{batch.uuid}/").json()["jobs"]
    # The three went to fal together, so fal's order (not the batch's) decides who waits.
    by_place = sorted(rows, key=lambda row: -1 if row["queue_position"] is None else row["queue_position"])
    assert [row["queue_position"] for row in by_place] == [None, 0, 1]
    assert by_place[0]["remote_started_at"] and by_place[2]["remote_started_at"] is None
    assert {row["status"] for row in rows} == {"running"}
    page = api.get(f"/batches/{batch.uuid}/").content.decode()
    assert "waiting in fal's queue: 1 request ahead" in page  # on the job card


def test_a_completed_request_whose_result_fails_is_fetched_again_with_backoff_and_never_resubmitted(
        user, fal_sim, settings):
    settings.FAL_RESULT_FETCH_BACKOFF_SECONDS = 0.05
    settings.HTTP_MAX_TRIES = 1
    fal_sim.inject("result_500", 3)
    job = make_batch(user).jobs.get()

    provider_pump(provider_name="fal")

    job.refresh_from_db()
    assert (job.status, job.attempts, job.result_fetch_failures) == (S.SUCCEEDED, 1, 3)
    assert sum(fal_sim.submits.values()) == 1
    assert job.cost_usd == fal_cost(job.params) and job.wasted_usd == 0


def test_a_result_that_never_comes_fails_after_the_set_tries_and_is_billed_not_resubmitted(user, fal_sim, settings):
    settings.FAL_RESULT_FETCH_BACKOFF_SECONDS = 0.01
    settings.FAL_RESULT_FETCH_TRIES = 3
    fal_sim.inject("result_500", 1000)
    job = make_batch(user).jobs.get()

    provider_pump(provider_name="fal")

    job.refresh_from_db()
    assert (job.status, job.error_code, job.attempts) == (S.FAILED, "result_unavailable", 1)
    assert "could not be fetched in 3 tries" in job.error_message
    result_gets = [p for m, p in fal_sim.calls if m == "GET" and p.endswith(f"/requests/{job.external_id}")]
    assert len(result_gets) == 3
    assert sum(fal_sim.submits.values()) == 1
    assert job.cost_usd == job.wasted_usd == fal_cost(job.params)  # fal bills a completed request


def test_the_next_result_fetch_waits_for_its_backoff(user, fal_sim, settings):
    settings.FAL_RESULT_FETCH_BACKOFF_SECONDS = 3600
    settings.GENHUB_PUMP_SECONDS = 3
    fal_sim.inject("result_500", 1000)
    job = make_batch(user).jobs.get()

    provider_pump(provider_name="fal")  # submits, follows, one failed fetch, then rests for an hour

    job.refresh_from_db()
    assert (job.status, job.result_fetch_failures) == (S.RUNNING, 1)
    assert job.next_check_at > job.started_at
    result_gets = [p for m, p in fal_sim.calls if m == "GET" and p.endswith(f"/requests/{job.external_id}")]
    assert len(result_gets) == 1


def test_an_output_contradicting_the_request_fails_for_good_after_one_confirmation(user, fal_sim, api):
    fal_sim.inject("contradicting_output")
    batch = make_batch(user, params={"num_frames": 17, "fps": 16})
    job = batch.jobs.get()

    provider_pump(provider_name="fal")

    job.refresh_from_db()
    assert (job.status, job.error_code, job.attempts) == (S.FAILED, "output_mismatch", 1)
    assert "33 frames at 32 fps; 17 frames at 16 fps were asked for" in job.error_message
    assert "not generated again" in job.error_message
    assert sum(fal_sim.submits.values()) == 1
    assert file_gets(fal_sim, job) == 2  # fetched, then fetched once more to confirm
    assert job.cost_usd == job.wasted_usd == fal_cost(job.params)
    body = api.get(f"/api/batches/{batch.uuid}/").json()
    assert body["wasted_usd"] == body["cost_usd"] == str(fal_cost(job.params))
    assert body["jobs"][0]["wasted_usd"] == str(fal_cost(job.params))


def test_a_mismatch_that_a_second_fetch_does_not_confirm_is_a_success(user, fal_sim, monkeypatch):
    from providers.fal import FalProvider

    fal_sim.inject("contradicting_output")
    job = make_batch(user).jobs.get()
    real = FalProvider.fetch_output
    fetched = []

    def second_fetch_is_right(self, source, **kwargs):
        fetched.append(source)
        data = real(self, source, **kwargs)
        if len(fetched) == 2:  # the second download is the right clip: the first was the odd one
            (record,) = fal_sim.requests.values()
            return fal_sim._render(record["payload"])
        return data

    monkeypatch.setattr(FalProvider, "fetch_output", second_fetch_is_right)

    provider_pump(provider_name="fal")

    job.refresh_from_db()
    assert (job.status, job.attempts, job.video_frames, job.video_fps) == (S.SUCCEEDED, 1, 17, 16.0)
    assert len(fetched) == 2
