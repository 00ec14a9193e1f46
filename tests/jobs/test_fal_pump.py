"""The fal pump in-process against the simulated fal: submission, polling, artifacts, retries."""

import io

import av
import pytest
from django_q.models import OrmQ

from jobs.dispatch import provider_pump
from jobs.models import Job
from providers.registry import get_provider
from tests.jobs.factories import make_batch

S = Job.Status
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def quick_pump(settings):
    settings.GENHUB_PUMP_SECONDS = 15
    settings.FAL_POLL_INTERVAL = 0.05


def test_a_batch_finishes_with_stored_checked_videos_posters_and_costs(user, fal_sim):
    batch = make_batch(user, count=3, params={"num_frames": 33, "fps": 16, "resolution": "720p"})

    provider_pump(provider_name="fal")

    jobs = list(batch.jobs.all())
    assert [j.status for j in jobs] == [S.SUCCEEDED] * 3
    for job in jobs:
        with job.output_video.open("rb") as handle, av.open(io.BytesIO(handle.read())) as container:
            assert sum(1 for _ in container.decode(video=0)) == 33
        assert (job.video_frames, job.video_fps, job.video_codec) == (33, 16.0, "h264")
        assert job.poster.name.endswith(".jpg")
        # 33 frames are 2.0625 s at fal's 16-fps billing rate, at $0.08/s for 720p.
        assert str(job.cost_usd) == "0.1650"
        assert job.external_id and job.provider_ref["status_url"].endswith("/status")
        assert job.attempts == 1


def test_it_never_has_more_than_the_configured_concurrency_in_flight(user, fal_sim, settings):
    settings.FAL_MAX_IN_FLIGHT = 2
    fal_sim.run_seconds = 0.3
    seen = []
    original = fal_sim._submit

    def spy(request, endpoint):
        # What fal counts against the limit: requests it has not finished (a completed request whose
        # result genhub is still fetching holds no slot there).
        seen.append(sum(1 for r in fal_sim.requests.values() if r["finished"] is None))
        return original(request, endpoint)

    fal_sim._submit = spy
    batch = make_batch(user, count=5)

    provider_pump(provider_name="fal")

    assert batch.jobs.filter(status=S.SUCCEEDED).count() == 5
    assert max(seen) <= 1  # at most one other request in flight when a second one is submitted


def test_a_bad_video_is_retried_and_never_a_success(user, fal_sim):
    fal_sim.inject("bad_video")
    job = make_batch(user).jobs.get()

    provider_pump(provider_name="fal")

    job.refresh_from_db()
    assert job.status == S.SUCCEEDED
    assert job.attempts == 2
    assert job.video_frames == 17


def test_a_bad_video_on_every_attempt_fails_the_job(user, fal_sim):
    fal_sim.inject("bad_video", 3)
    job = make_batch(user).jobs.get()

    provider_pump(provider_name="fal")

    job.refresh_from_db()
    assert (job.status, job.error_code, job.attempts) == (S.FAILED, "bad_output", 3)
    assert not job.output_video


def test_an_input_error_fails_the_job_without_retrying(user, fal_sim):
    fal_sim.inject("validation_error")
    job = make_batch(user).jobs.get()

    provider_pump(provider_name="fal")

    job.refresh_from_db()
    assert (job.status, job.error_code, job.attempts) == (S.FAILED, "invalid_input", 1)
    assert "image_url" in job.error_message


def test_a_second_pump_steps_aside_while_one_holds_the_lease(user, fal_sim):
    from genhub.leases import lease_acquire

    make_batch(user)
    assert lease_acquire(name="pump:fal", seconds=60)

    assert provider_pump(provider_name="fal").startswith("skipped")


def test_the_pump_hands_over_to_a_new_task_when_its_time_is_up(user, fal_sim, settings):
    settings.GENHUB_PUMP_SECONDS = 0
    fal_sim.queue_seconds = 30
    make_batch(user)

    provider_pump(provider_name="fal")

    assert [row.task["func"] for row in OrmQ.objects.all()] == ["jobs.tasks.pump"]


def test_a_job_cancelled_at_fal_time_is_cancelled_there(user, fal_sim, settings, django_capture_on_commit_callbacks):
    from jobs import services
    from jobs.tasks import cancel_remote

    settings.GENHUB_PUMP_SECONDS = 0
    fal_sim.queue_seconds = 30
    job = make_batch(user).jobs.get()
    provider_pump(provider_name="fal")
    job.refresh_from_db()
    assert job.status == S.RUNNING and job.external_id
    OrmQ.objects.all().delete()

    with django_capture_on_commit_callbacks(execute=True):
        services.job_cancel(job=job)
    (task,) = [row.task for row in OrmQ.objects.all()]
    cancel_remote(*task["args"])

    assert task["func"] == "jobs.tasks.cancel_remote"
    assert fal_sim.requests[job.external_id]["cancelled"]


def test_a_failed_status_call_keeps_following_the_request_instead_of_paying_twice(user, fal_sim):
    fal_sim.inject("status_503", 6)  # more than the HTTP seam retries within one pass
    job = make_batch(user).jobs.get()

    provider_pump(provider_name="fal")

    job.refresh_from_db()
    assert (job.status, job.attempts) == (S.SUCCEEDED, 1)
    assert sum(fal_sim.submits.values()) == 1


def test_a_job_cancelled_while_its_submit_was_in_flight_is_cancelled_at_fal(user, fal_sim, monkeypatch):
    from jobs import polled_pump, services

    fal_sim.queue_seconds = 30
    make_batch(user)
    real_record = services.jobs_record_submissions

    def cancelled_meanwhile(**kwargs):
        Job.objects.filter(pk__in=[job_id for job_id, *_ in kwargs["submitted"]]).update(status=S.CANCELLED)
        return real_record(**kwargs)

    monkeypatch.setattr(services, "jobs_record_submissions", cancelled_meanwhile)
    polled_pump._submit_queued(get_provider("fal"))

    (request,) = fal_sim.requests.values()
    assert request["cancelled"]


def test_an_unusable_clip_fal_billed_counts_in_the_jobs_cost(user, fal_sim):
    from jobs.costs import fal_cost

    fal_sim.inject("bad_video")
    job = make_batch(user).jobs.get()

    provider_pump(provider_name="fal")

    job.refresh_from_db()
    assert job.status == S.SUCCEEDED and job.attempts == 2
    assert job.cost_usd == 2 * fal_cost(job.params)  # the bad clip and the good one


def test_a_freed_slot_is_submitted_again_before_its_clip_is_downloaded(user, fal_sim, settings):
    settings.FAL_MAX_IN_FLIGHT = 1
    fal_sim.queue_seconds, fal_sim.run_seconds = 0.0, 0.1
    batch = make_batch(user, count=2)

    provider_pump(provider_name="fal")

    assert batch.jobs.filter(status=S.SUCCEEDED).count() == 2
    calls = [(method, path) for method, path in fal_sim.calls
             if method == "POST" and "/requests/" not in path or path.startswith("/files/")]
    # submit 1, submit 2 (the slot freed by 1, bought back at once), then 1's clip, then 2's.
    assert [method for method, _ in calls] == ["POST", "POST", "GET", "GET"]


def test_the_pumps_http_threads_are_kept_from_pass_to_pass():
    import threading

    from jobs.polled_pump import _Fanout

    local = threading.local()  # what each thread keeps: its HTTP session (providers/http.py)
    fanout = _Fanout("test")

    def call(job):
        kept = getattr(local, "marked", False)
        local.marked = True
        threading.Event().wait(0.02)  # long enough for the first pass to start all its threads
        return kept

    try:
        fanout.map(call, list(range(16)))
        second_pass = fanout.map(call, list(range(16)))
    finally:
        fanout.close()

    assert all(second_pass)  # every call of the second pass ran on a thread that had already worked


def test_passes_start_one_poll_interval_apart_however_long_a_pass_takes(monkeypatch, settings):
    import itertools
    import threading

    from jobs import dispatch

    settings.FAL_POLL_INTERVAL = 0.3
    settings.GENHUB_PUMP_SECONDS = 1.2
    starts = []

    def slow_pass(provider, collector=None):
        starts.append(dispatch.time.monotonic())
        threading.Event().wait(0.2)  # a pass that takes two thirds of the interval
        return True

    monkeypatch.setattr(dispatch, "_pump_pass", slow_pass)
    monkeypatch.setattr(dispatch, "_has_unfinished", lambda name: False)  # no hand-over task afterwards
    dispatch.provider_pump(provider_name="fal")

    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) >= 2
    assert all(0.28 <= gap < 0.45 for gap in gaps), gaps  # 0.3 apart, not 0.3 + 0.2
