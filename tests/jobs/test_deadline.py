"""The deadline planner: while the GPU alone would miss a batch's deadline, the fewest waiting jobs move
to fal, from the end of the queue, within the caps; once the GPU is on time nothing more moves."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from gpu_instances.models import GpuInstance
from jobs import deadline
from jobs.eta import SpeedEstimate
from jobs.models import BatchRun, Job
from tests.jobs.factories import make_batch

pytestmark = pytest.mark.django_db
S = Job.Status


@pytest.fixture(autouse=True)
def no_margin(settings):
    settings.GENHUB_DEADLINE_MARGIN_SECONDS = 0
    settings.FAL_ESTIMATED_SECONDS_PER_CLIP = 30


def gpu_measured(user, seconds: float, *, count: int = 5) -> GpuInstance:
    """A ready GPU that has made `count` clips of `seconds` each (no spread: the bound is the median)."""
    instance = GpuInstance.objects.create(label="genhub", state="ready", ready_at=timezone.now(),
                                          dph_usd=Decimal("1.00"))
    done = make_batch(user, provider="vastai", count=count)
    done.jobs.update(status=S.SUCCEEDED, generation_seconds=seconds, instance=instance, finished_at=timezone.now())
    return instance


def batch_due_in(user, seconds: float, *, count: int, **kwargs) -> BatchRun:
    batch = make_batch(user, provider="vastai", count=count, **kwargs)
    BatchRun.objects.filter(pk=batch.pk).update(deadline=timezone.now() + timedelta(seconds=seconds))
    batch.refresh_from_db()
    return batch


def moved(batch) -> list[int]:
    return sorted(batch.jobs.filter(provider="fal").values_list("position", flat=True))


def test_it_moves_the_fewest_jobs_from_the_end_of_the_queue(user):
    gpu_measured(user, 10.0)
    batch = batch_due_in(user, 125, count=20)  # the GPU makes 12 in time

    assert deadline.deadlines_enforce() == 8

    assert moved(batch) == list(range(12, 20))
    for job in batch.jobs.filter(provider="fal"):
        assert job.status == S.QUEUED and job.fallback_from == "vastai"
        assert job.fallback_reason.startswith("deadline: moved to fal to finish by ")
    assert batch.jobs.filter(provider="vastai", status=S.QUEUED).count() == 12


def test_a_second_pass_moves_nothing_more_while_the_gpu_keeps_pace(user):
    gpu_measured(user, 10.0)
    batch = batch_due_in(user, 125, count=20)
    deadline.deadlines_enforce()
    assert deadline.deadlines_enforce() == 0
    assert len(moved(batch)) == 8


def test_a_gpu_on_time_moves_nothing(user):
    gpu_measured(user, 10.0)
    batch = batch_due_in(user, 500, count=20)
    assert deadline.deadlines_enforce() == 0
    assert moved(batch) == []


def test_a_faster_replacement_stops_the_moves_and_nothing_comes_back(user):
    slow = gpu_measured(user, 10.0)
    batch = batch_due_in(user, 125, count=20)
    deadline.deadlines_enforce()
    assert len(moved(batch)) == 8

    GpuInstance.objects.filter(pk=slow.pk).update(state="destroyed")
    gpu_measured(user, 2.0)  # the replacement is five times faster
    BatchRun.objects.filter(pk=batch.pk).update(deadline=timezone.now() + timedelta(seconds=50))
    assert deadline.deadlines_enforce() == 0
    assert len(moved(batch)) == 8  # already at fal (maybe paid): they stay there


def test_cancelled_jobs_let_the_gpu_catch_up(user):
    gpu_measured(user, 10.0)
    batch = batch_due_in(user, 125, count=14)  # 2 too many
    for job in batch.jobs.order_by("position")[:3]:
        Job.objects.filter(pk=job.pk).update(status=S.CANCELLED)
    assert deadline.deadlines_enforce() == 0


def test_running_work_and_older_batches_count_before_the_batch(user):
    instance = gpu_measured(user, 10.0)
    older = make_batch(user, provider="vastai", count=5)
    first = older.jobs.order_by("position").first()
    Job.objects.filter(pk=first.pk).update(status=S.RUNNING, progress=0.5, instance=instance)
    batch = batch_due_in(user, 126, count=10)  # 45 s of older work ahead: 8 of 10 fit

    assert deadline.deadlines_enforce() == 2
    assert moved(batch) == [8, 9] and moved(older) == []


def test_a_move_that_would_cross_the_batch_budget_does_not_happen_and_the_batch_says_so(user):
    gpu_measured(user, 10.0)
    # 20 GPU clips ≈ $0.06; each move adds fal's $0.0425 less the GPU's $0.0028: $0.20 leaves room for 3.
    batch = batch_due_in(user, 125, count=20, budget_usd="0.20")

    assert deadline.deadlines_enforce() == 3
    batch.refresh_from_db()
    assert "8 more job(s) would have to move to fal, but the batch budget $0.20 allows only 3" in batch.deadline_note
    assert deadline.deadlines_enforce() == 0  # no room left: no more moves


def test_the_monthly_budget_holds_moves_back_too(user, settings):
    settings.GENHUB_MONTHLY_BUDGET_USD = Decimal("0.05")
    gpu_measured(user, 10.0)
    batch = batch_due_in(user, 125, count=20)
    assert deadline.deadlines_enforce() == 0
    batch.refresh_from_db()
    assert "the monthly budget $0.05 allows only 0" in batch.deadline_note


def test_nothing_moves_when_fal_could_not_be_back_in_time_either(user, settings):
    settings.FAL_ESTIMATED_SECONDS_PER_CLIP = 200
    gpu_measured(user, 10.0)
    batch = batch_due_in(user, 125, count=20)
    assert deadline.deadlines_enforce() == 0
    batch.refresh_from_db()
    assert "would not be back in time" in batch.deadline_note


def test_a_passed_deadline_moves_nothing(user):
    gpu_measured(user, 10.0)
    batch = batch_due_in(user, 125, count=20)
    BatchRun.objects.filter(pk=batch.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    assert deadline.deadlines_enforce() == 0
    batch.refresh_from_db()
    assert "has passed" in batch.deadline_note


def test_plan_split_moves_all_when_even_that_cannot_meet_the_deadline():
    speed = SpeedEstimate(10.0, 10.0, 10.0, 5, "test")
    split = deadline.plan_split(waiting=10, gpu_before=20, boot_left=0, speed=speed, fal_before=0, turnaround=30,
                                seconds_left=100)
    assert (split.gpu, split.fal, split.meets) == (0, 10, False)


def test_the_vast_pump_pass_applies_the_deadline_before_dispatching(user, vast_sim, settings):
    """The planner runs inside the vastai pump pass: jobs that must go to fal never start on the GPU."""
    from jobs.dispatch import _pump_pass
    from providers.registry import get_provider

    gpu_measured(user, 10.0)
    # That GPU took 60 s to boot and is gone: no GPU ready, the pass parks the queue and rents another.
    GpuInstance.objects.update(state="destroyed", created_at=timezone.now() - timedelta(seconds=60))
    batch = batch_due_in(user, 125, count=20)  # boot 60 s + 6 clips
    _pump_pass(get_provider("vastai"))
    assert moved(batch) == list(range(6, 20))
    assert batch.jobs.filter(provider="vastai", status=S.WAITING_FOR_GPU).count() == 6


# --- the deadline as input --------------------------------------------------------------------------


def post_batch(api, png, **fields):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return api.post("/api/batches/", {"provider": "vastai", "prompt": "p",
                                      "images": [SimpleUploadedFile("a.png", png)], **fields}, format="multipart")


@pytest.mark.parametrize("value, message", [
    ("tomorrow", "ISO 8601"),
    ("2030-01-01T09:00:00", "no timezone"),
    ("2001-01-01T09:00:00Z", "in the future"),
    ("2999-01-01T09:00:00Z", "within 366 days"),
])
def test_a_bad_deadline_is_a_400_naming_the_field(api, png, value, message):
    response = post_batch(api, png, deadline=value)
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["field"] == "deadline" and message in error["message"]
    assert not BatchRun.objects.exists()


def test_a_fal_batch_does_not_take_a_deadline(api, png):
    response = post_batch(api, png, provider="fal", deadline=(timezone.now() + timedelta(hours=2)).isoformat())
    assert response.status_code == 400 and "only a vastai batch" in response.json()["errors"][0]["message"]


def test_a_deadline_is_taken_at_submit_and_changed_later(api, png):
    due = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)
    response = post_batch(api, png, deadline=due.isoformat())
    assert response.status_code == 201, response.content
    batch_id = response.json()["id"]
    assert BatchRun.objects.get().deadline == due

    later = due + timedelta(hours=1)
    changed = api.post(f"/api/batches/{batch_id}/deadline/", {"deadline": later.isoformat()}, format="json")
    assert changed.status_code == 200 and BatchRun.objects.get().deadline == later

    bad = api.post(f"/api/batches/{batch_id}/deadline/", {"deadline": "soon"}, format="json")
    assert bad.status_code == 400 and "ISO 8601" in str(bad.json()["errors"]["deadline"])
    assert BatchRun.objects.get().deadline == later

    removed = api.post(f"/api/batches/{batch_id}/deadline/", {"deadline": None}, format="json")
    assert removed.status_code == 200 and removed.json()["deadline"] is None


def test_submit_batch_takes_a_deadline(user, tmp_path, png):
    from django.core.management import CommandError, call_command

    image = tmp_path / "a.png"
    image.write_bytes(png)
    with pytest.raises(CommandError, match="deadline: must be in the future"):
        call_command("submit_batch", str(image), user="alice", provider="vastai", prompt="p",
                     deadline="2001-01-01T00:00:00Z")
    due = timezone.now() + timedelta(hours=3)
    call_command("submit_batch", str(image), user="alice", provider="vastai", prompt="p", deadline=due.isoformat())
    assert BatchRun.objects.get().deadline == due


def test_the_dry_run_shows_all_on_the_gpu_beside_the_split(user, client, png, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(user)
    gpu_measured(user, 10.0)
    due = timezone.now() + timedelta(seconds=125)
    images = [SimpleUploadedFile(f"i{i}.png", png) for i in range(20)]
    response = client.post("/batches/new/", {"action": "estimate", "provider": "vastai", "prompt": "p",
                                             "pairing": "prompt", "images": images, "num_frames": "17",
                                             "deadline": due.isoformat()})
    assert response.status_code == 200
    choice = response.context["dry_run"]["deadline_choice"]
    assert (choice.gpu, choice.fal) == (12, 8)
    assert choice.split_cost > choice.all_gpu_cost
    text = response.content.decode()
    assert "all on the GPU: $0.06, done at " in text
    assert ": 12 on the GPU + 8 on fal: $0.37, done at " in text


# --- end to end ------------------------------------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
def test_a_gpu_batch_that_would_miss_its_deadline_finishes_in_time_with_its_tail_on_fal(
        api, png, vast_sim_factory, fal_sim, qcluster):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.conftest import wait_for

    vast_sim_factory(swarmui_generation_seconds=1.0)
    qcluster(VAST_ESTIMATED_SECONDS_PER_CLIP="1", GENHUB_BOOT_ESTIMATE_SECONDS="2", FAL_ESTIMATED_SECONDS_PER_CLIP="2",
             GENHUB_DEADLINE_MARGIN_SECONDS="1", FAL_POLL_INTERVAL="0.2", GENHUB_RECONCILE_INTERVAL="0.2")
    due = timezone.now() + timedelta(seconds=15)  # the GPU alone needs 20 s and more
    images = [SimpleUploadedFile(f"f{i:02}.png", png) for i in range(20)]
    response = api.post("/api/batches/", {"provider": "vastai", "prompt": "p", "images": images,
                                          "params": '{"num_frames": 17}', "deadline": due.isoformat()},
                        format="multipart")
    assert response.status_code == 201, response.content
    batch = BatchRun.objects.get()
    wait_for(lambda: not batch.jobs.filter(status__in=Job.UNFINISHED).exists(), timeout=120,
             message="every job to finish")

    jobs = list(batch.jobs.order_by("position"))
    assert [job.status for job in jobs] == [S.SUCCEEDED] * 20
    on_fal = [job.position for job in jobs if job.provider == "fal"]
    assert 0 < len(on_fal) < 20
    assert on_fal == list(range(20 - len(on_fal), 20))  # the tail of the queue moved, nothing else
    assert all(jobs[p].fallback_reason.startswith("deadline:") for p in on_fal)
    assert max(job.finished_at for job in jobs) <= due
    assert fal_sim.submits and sum(fal_sim.submits.values()) == len(on_fal)  # each moved job bought once
    detail = api.get(f"/api/batches/{batch.uuid}/").json()
    assert detail["deadline_moved"] == len(on_fal) and detail["eta"] is None


def spread_gpu(user) -> GpuInstance:
    """A ready GPU whose clips took 8–12 s (median 10 s)."""
    instance = GpuInstance.objects.create(label="genhub", state="ready", ready_at=timezone.now(),
                                          dph_usd=Decimal("1.00"))
    done = make_batch(user, provider="vastai", count=10)
    for job, seconds in zip(done.jobs.all(), [8, 9, 9, 10, 10, 10, 10, 11, 11, 12], strict=True):
        Job.objects.filter(pk=job.pk).update(status=S.SUCCEEDED, generation_seconds=seconds, instance=instance,
                                             finished_at=timezone.now())
    return instance


def test_far_from_the_deadline_only_the_expected_need_moves_and_the_batch_says_more_may(user):
    spread_gpu(user)
    batch = batch_due_in(user, 605, count=80)  # the median makes 60 in time; the pessimistic bound fewer
    assert deadline.deadlines_enforce() == 20
    batch.refresh_from_db()
    assert "more job(s) may move to fal close to the deadline" in batch.deadline_note


def test_close_to_the_deadline_the_pessimistic_bound_moves_too(user, settings):
    settings.FAL_ESTIMATED_SECONDS_PER_CLIP = 100  # fal needs ~100 s: a deadline 120 s away is close
    spread_gpu(user)
    batch = batch_due_in(user, 122, count=20)
    # The median fits 12 clips (120 s); the bound (p90 11.1 s, narrowing with √clips) fits 11.
    assert deadline.deadlines_enforce() == 9
    batch.refresh_from_db()
    assert batch.deadline_note == ""


def test_after_the_first_plan_corrections_wait_until_fal_could_not_take_them_later(user, settings):
    slow = gpu_measured(user, 10.0)
    batch = batch_due_in(user, 605, count=80)
    assert deadline.deadlines_enforce() == 20  # the first plan: the expected need, at once

    # The GPU turns out slower (12 s per clip): 10 more would be needed, but 600 s is far from fal's 30 s.
    Job.objects.filter(instance=slow, status=S.SUCCEEDED).update(generation_seconds=12.0)
    assert deadline.deadlines_enforce() == 0
    batch.refresh_from_db()
    assert "more job(s) may move to fal close to the deadline" in batch.deadline_note

    # Close to the deadline (fal needs 30 s for one wave; twice that is the horizon) the correction moves.
    batch.jobs.filter(provider="vastai", position__lt=55).update(status=S.SUCCEEDED)
    BatchRun.objects.filter(pk=batch.pk).update(deadline=timezone.now() + timedelta(seconds=55))
    assert deadline.deadlines_enforce() == 1  # 5 left at 12 s: 4 fit in 55 s
    assert len(moved(batch)) == 21
