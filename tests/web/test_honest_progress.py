"""The batch page and its API say what is really happening: a job queued inside SwarmUI is "next on the
GPU", not "running 0 %"; while no GPU is ready they say what the instance is doing and for how long
against how long it usually takes; chips appear only where they apply; wording and figures read well."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from genhub.formatting import format_ago, format_duration, format_rate, plural
from gpu_instances.models import GpuInstance
from jobs.models import Job
from tests.jobs.factories import make_batch
from tests.web.helpers import finish_job, shown_text, text_of

pytestmark = pytest.mark.django_db
S = Job.Status
ADDRESS = "203.0.113.9"


def instance(state=GpuInstance.State.READY, *, age_seconds=0, **fields) -> GpuInstance:
    fields.setdefault("vast_id", 77)
    fields.setdefault("gpu_name", "H100 SXM")
    created = GpuInstance.objects.create(label="genhub", state=state, dph_usd=Decimal("1.1208"), **fields)
    GpuInstance.objects.filter(pk=created.pk).update(created_at=timezone.now() - timedelta(seconds=age_seconds))
    created.refresh_from_db()
    return created


def past_boot(seconds: float, vast_id: int) -> GpuInstance:
    """An earlier instance that took `seconds` from request to ready, and was released since."""
    start = timezone.now() - timedelta(days=1)
    past = instance(GpuInstance.State.DESTROYED, vast_id=vast_id, end_reason="operator: done")
    GpuInstance.objects.filter(pk=past.pk).update(created_at=start, ready_at=start + timedelta(seconds=seconds),
                                                  destroyed_at=start + timedelta(hours=1))
    return past


def run(job: Job, gpu: GpuInstance, *, progress: float, started_seconds_ago: float) -> None:
    Job.objects.filter(pk=job.pk).update(status=S.RUNNING, instance=gpu, progress=progress, attempts=1,
                                         started_at=timezone.now() - timedelta(seconds=started_seconds_ago))


def card(page: str, job: Job) -> str:
    start = page.index(f'id="job-{job.uuid}"')
    return page[start:page.index("</li>", page.index('class="card-actions"', start))]


def gpu_note(page: str) -> str:
    start = page.index('id="gpu-activity"')
    return page[start - 40:page.index("</div>", start)]


# --- next on the GPU --------------------------------------------------------------------------------


def test_a_job_waiting_inside_swarmui_behind_another_says_next_on_the_gpu(web, api, user):
    batch = make_batch(user, provider="vastai", count=2)
    generating, waiting = batch.jobs.all()
    gpu = instance()
    run(generating, gpu, progress=0.4, started_seconds_ago=30)
    run(waiting, gpu, progress=0.0, started_seconds_ago=29)

    page = web.get(f"/batches/{batch.uuid}/").content.decode()
    jobs = {job["id"]: job for job in api.get(f"/api/batches/{batch.uuid}/").json()["jobs"]}

    assert shown_text(card(page, waiting)).count("Next on the GPU") == 1
    chips = shown_text(page.split('<ul class="counts">')[1].split("</ul>")[0])
    assert chips == "1 running 1 next on the GPU"
    assert "0%" not in shown_text(card(page, waiting)), "a job that has not started must not show 0 %"
    assert "Running" in shown_text(card(page, generating)) and "40%" in shown_text(card(page, generating))
    assert jobs[str(waiting.uuid)]["phase"] == "next_on_gpu" and jobs[str(waiting.uuid)]["status"] == "running"
    assert jobs[str(generating.uuid)]["phase"] == "running"
    assert api.get(f"/api/jobs/{waiting.uuid}/").json()["phase"] == "next_on_gpu"


def test_the_job_queued_behind_another_users_job_is_next_too(api, user, other_user):
    theirs = make_batch(other_user, provider="vastai").jobs.get()
    mine = make_batch(user, provider="vastai").jobs.get()
    gpu = instance()
    run(theirs, gpu, progress=0.0, started_seconds_ago=5)  # sent first: SwarmUI works on it (no step yet)
    run(mine, gpu, progress=0.0, started_seconds_ago=2)

    job = api.get(f"/api/jobs/{mine.uuid}/").json()

    assert job["phase"] == "next_on_gpu"
    assert str(theirs.uuid) not in str(api.get(f"/api/batches/{mine.batch.uuid}/").json())


def test_a_job_alone_on_the_gpu_is_running_even_before_its_first_step(api, user):
    job = make_batch(user, provider="vastai").jobs.get()
    run(job, instance(), progress=0.0, started_seconds_ago=1)

    assert api.get(f"/api/jobs/{job.uuid}/").json()["phase"] == "running"


# --- what the GPU is doing ----------------------------------------------------------------------------


def test_while_the_gpu_boots_the_page_says_for_how_long_of_typically_how_long(web, api, user):
    for number, seconds in enumerate((120, 150, 600)):
        past_boot(seconds, vast_id=number + 1)
    batch = make_batch(user, provider="vastai", count=2)
    Job.objects.update(status=S.WAITING_FOR_GPU)
    instance(GpuInstance.State.LOADING, age_seconds=45)

    note = gpu_note(web.get(f"/batches/{batch.uuid}/").content.decode())
    gpu = api.get(f"/api/batches/{batch.uuid}/").json()["gpu"]

    assert "hidden" not in note.split(">")[0]
    assert "Booting the GPU (vast #77, H100 SXM)" in text_of(note)
    assert "(45 s so far, typically 2 min 30 s)" in text_of(note)  # the median of 2 min, 2 min 30 s, 10 min
    assert 'href="/instance/"' in note
    assert gpu["phase"] == "booting" and gpu["typical_seconds"] == 150 and 44 <= gpu["elapsed_seconds"] <= 50


def test_once_swarmui_answers_the_page_says_models_are_loading_without_the_address(web, api, user):
    batch = make_batch(user, provider="vastai")
    Job.objects.update(status=S.WAITING_FOR_GPU)
    instance(GpuInstance.State.LOADING, age_seconds=90, base_url=f"http://{ADDRESS}:40123")

    page = web.get(f"/batches/{batch.uuid}/").content.decode()
    body = str(api.get(f"/api/batches/{batch.uuid}/").json())

    assert "Loading models on the GPU (vast #77, H100 SXM)" in text_of(gpu_note(page))
    assert "1 min 30 s so far" in text_of(gpu_note(page))
    assert ADDRESS not in page and ADDRESS not in body


def test_a_replacement_says_which_gpu_failed_and_why_but_not_where_it_was(web, user):
    batch = make_batch(user, provider="vastai")
    Job.objects.update(status=S.WAITING_FOR_GPU)
    failed = instance(GpuInstance.State.DESTROYED, vast_id=11,
                      end_reason=f"unhealthy: 3 failed probes over 70s (http://{ADDRESS}:40123/API: timeout)")
    GpuInstance.objects.filter(pk=failed.pk).update(destroyed_at=timezone.now(), created_at=timezone.now()
                                                    - timedelta(hours=2))
    instance(GpuInstance.State.PROVISIONING, vast_id=None, gpu_name="", age_seconds=3)

    page = web.get(f"/batches/{batch.uuid}/").content.decode()

    note = text_of(gpu_note(page))
    assert "Replacing vast #11, which failed: unhealthy: 3 failed probes over 70s" in note
    assert "Renting a GPU: looking for the cheapest matching vast.ai offer (3 s so far)." in note
    assert ADDRESS not in page


def test_with_no_gpu_rented_yet_the_page_says_one_is_being_rented(web, user):
    batch = make_batch(user, provider="vastai")
    Job.objects.update(status=S.WAITING_FOR_GPU)

    note = text_of(gpu_note(web.get(f"/batches/{batch.uuid}/").content.decode()))

    assert "No GPU is rented yet: genhub rents one within a minute" in note


def test_with_the_gpu_ready_or_the_batch_finished_there_is_no_gpu_note(web, api, user):
    batch = make_batch(user, provider="vastai", count=2)
    gpu = instance()
    run(batch.jobs.first(), gpu, progress=0.5, started_seconds_ago=3)

    ready_page = web.get(f"/batches/{batch.uuid}/").content.decode()
    GpuInstance.objects.update(state=GpuInstance.State.LOADING)
    for job in batch.jobs.all():
        finish_job(job)
    finished_page = web.get(f"/batches/{batch.uuid}/").content.decode()

    assert 'id="gpu-activity" role="status" hidden' in ready_page.replace('data-field="gpu" ', "")
    assert api.get(f"/api/batches/{batch.uuid}/").json()["gpu"] is None
    assert 'id="gpu-activity" role="status" hidden' in finished_page.replace('data-field="gpu" ', "")


# --- chips and sections that apply --------------------------------------------------------------------


def test_a_fal_batch_has_no_gpu_chip_and_no_gpu_note(web, user):
    batch = make_batch(user, provider="fal", count=2)

    page = web.get(f"/batches/{batch.uuid}/").content.decode()

    assert 'data-count="waiting_for_gpu"' not in page and 'id="gpu-activity"' not in page
    assert "waiting for GPU" not in shown_text(page)


def test_count_chips_show_what_happens_and_hide_what_does_not(web, user):
    batch = make_batch(user, provider="vastai", count=2)
    finish_job(batch.jobs.first(), status=S.FAILED)

    chips = shown_text(web.get(f"/batches/{batch.uuid}/").content.decode().split('<ul class="counts">')[1]
                       .split("</ul>")[0])

    assert chips == "1 queued 1 failed"  # no "0 running", "0 cancelled", "0 paused", "0 waiting for GPU"


# --- wording and figures --------------------------------------------------------------------------------


def test_counts_money_and_times_read_as_people_write_them():
    now = timezone.now()

    assert [plural(1, "job"), plural(4, "job"), plural(0, "job")] == ["1 job", "4 jobs", "0 jobs"]
    assert [format_rate(Decimal("1.1208")), format_rate(Decimal("2.1500")), format_rate(Decimal("3"))] == [
        "1.1208", "2.15", "3.00"]
    assert [format_duration(s) for s in (0, 45, 60, 130, 3900)] == ["0 s", "45 s", "1 min", "2 min 10 s", "1 h 5 min"]
    assert [format_ago(now - timedelta(seconds=s), now) for s in (0, 9, 25, 200, 7500)] == [
        "just now", "just now", "25 s ago", "3 min ago", "2 h 5 min ago"]


def test_the_instance_panel_says_healthy_checked_just_now_and_one_price_format(web, user):
    instance(last_health_ok=True, last_health_at=timezone.now(), health_failures=0)

    page = text_of(web.get("/instance/").content.decode())

    assert "Last health check healthy, checked just now" in page
    assert "Price $1.1208/h" in page
    assert "ok, 0" not in page and "minutes ago" not in page
