"""End to end on a real django-q2 cluster process: API → queue → pump → fal simulator → stored videos."""

import io

import av
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from gpu_instances.qualification import SELFTEST_PROMPT
from jobs.models import Job
from providers.simulators.media import make_image
from tests.conftest import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


def test_a_20_item_fal_batch_finishes_with_20_stored_decodable_videos(api, fal_sim, qcluster):
    images = [SimpleUploadedFile(f"frame{i:02}.png", make_image(color=(i * 12, 80, 160))) for i in range(20)]
    response = api.post("/api/batches/", {"provider": "fal", "prompt": "slow dolly in", "images": images,
                                          "params": '{"num_frames": 25}'}, format="multipart")
    assert response.status_code == 201, response.content

    qcluster(FAL_POLL_INTERVAL="0.2", FAL_MAX_IN_FLIGHT="8")
    wait_for(lambda: not Job.objects.filter(status__in=Job.ACTIVE).exists(), timeout=120,
             message="all 20 jobs to finish")

    jobs = list(Job.objects.all())
    assert [job.status for job in jobs] == [Job.Status.SUCCEEDED] * 20
    for job in jobs:
        video = api.get(f"/api/jobs/{job.uuid}/video")
        assert video.status_code == 200
        with av.open(io.BytesIO(b"".join(video.streaming_content))) as container:
            assert sum(1 for _ in container.decode(video=0)) == 25
    assert sum(fal_sim.submits.values()) == 20  # no job was submitted twice


def test_a_fal_batch_on_a_full_disk_finishes_once_the_disk_frees_with_one_paid_submission_per_job(
        api, fal_sim, qcluster, small_disk):
    from jobs.costs import fal_cost
    from jobs.models import Alert

    images = [SimpleUploadedFile(f"still{i}.png", make_image(color=(i * 60, 90, 30))) for i in range(3)]
    response = api.post("/api/batches/", {"provider": "fal", "prompt": "slow pan", "images": images,
                                          "params": '{"num_frames": 17}'}, format="multipart")
    assert response.status_code == 201, response.content
    small_disk.fill()

    qcluster(FAL_POLL_INTERVAL="0.2", GENHUB_STORE_RETRY_SECONDS="0.5", GENHUB_STORAGE_MIN_FREE_MB="0")
    wait_for(lambda: Job.objects.filter(status=Job.Status.STORING).count() == 3, timeout=120,
             message="all 3 paid clips kept while the disk is full")
    assert Alert.objects.filter(kind=Alert.Kind.STORAGE_FAILING, resolved_at__isnull=True).exists()
    small_disk.free()
    wait_for(lambda: Job.objects.filter(status=Job.Status.SUCCEEDED).count() == 3, timeout=120,
             message="all 3 stored once the disk has room")

    assert sum(fal_sim.submits.values()) == 3  # exactly one paid submission per job
    batch = api.get(f"/api/batches/{response.json()['id']}/").json()
    assert batch["cost_usd"] == str(3 * fal_cost(Job.objects.first().params)) and batch["wasted_usd"] == "0.0000"
    for job in Job.objects.all():
        video = api.get(f"/api/jobs/{job.uuid}/video")
        with av.open(io.BytesIO(b"".join(video.streaming_content))) as container:
            assert sum(1 for _ in container.decode(video=0)) == 17
    wait_for(lambda: not Alert.objects.filter(kind=Alert.Kind.STORAGE_FAILING, resolved_at__isnull=True).exists(),
             timeout=30, message="the storage alert resolved")


def test_a_vastai_clip_that_cannot_be_stored_is_kept_and_never_generated_again(
        api, vast_sim_factory, qcluster, small_disk):
    vast_sim = vast_sim_factory()
    images = [SimpleUploadedFile(f"gpu{i}.png", make_image(color=(i * 70, 40, 120))) for i in range(3)]
    response = api.post("/api/batches/", {"provider": "vastai", "prompt": "slow pan", "images": images,
                                          "params": '{"num_frames": 17}'}, format="multipart")
    assert response.status_code == 201, response.content
    small_disk.fill()

    qcluster(GENHUB_RECONCILE_INTERVAL="0.2", GENHUB_STORE_RETRY_SECONDS="0.5", GENHUB_STORAGE_MIN_FREE_MB="0")
    wait_for(lambda: Job.objects.filter(status=Job.Status.STORING).exists(), timeout=120,
             message="a paid GPU clip kept while the disk is full")
    small_disk.free()
    wait_for(lambda: Job.objects.filter(status=Job.Status.SUCCEEDED).count() == 3, timeout=120,
             message="all 3 stored once the disk has room")

    generations = sum(1 for instance in vast_sim.instances.values() for generation in instance.swarmui.generations
                      if generation.params["prompt"] != SELFTEST_PROMPT)
    assert generations == 3  # one generation per job: the kept clips were stored, not made again
    assert all(job.attempts == 1 and job.cost_usd is not None for job in Job.objects.all())
