"""End to end with object storage: the API stores inputs in the bucket, a real cluster process reads them
from it and stores every clip there; nothing touches the local disk."""

import io

import av
import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs.models import Job
from providers.simulators.media import make_image
from tests.conftest import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


def test_a_fal_batch_on_a_cluster_with_s3_storage_keeps_every_file_in_the_bucket(api, fal_sim, qcluster, s3,
                                                                                media_root):
    images = [SimpleUploadedFile(f"frame{i}.png", make_image(color=(i * 40, 80, 160))) for i in range(6)]
    response = api.post("/api/batches/", {"provider": "fal", "prompt": "slow dolly in", "images": images,
                                          "params": '{"num_frames": 17}'}, format="multipart")
    assert response.status_code == 201, response.content

    qcluster(FAL_POLL_INTERVAL="0.2", **s3.env)
    wait_for(lambda: not Job.objects.filter(status__in=Job.ACTIVE).exists(), timeout=120,
             message="all 6 jobs to finish")

    jobs = list(Job.objects.order_by("position"))
    assert [job.status for job in jobs] == [Job.Status.SUCCEEDED] * 6
    assert s3.keys("outputs/") == sorted(job.output_video.name for job in jobs)
    assert s3.keys("posters/") == sorted(job.poster.name for job in jobs)
    assert len(s3.keys("inputs/")) == 6
    assert not (media_root / "outputs").exists() and not (media_root / "inputs").exists()
    for job in jobs:
        redirect = api.get(f"/api/jobs/{job.uuid}/video")
        assert redirect.status_code == 302
        with av.open(io.BytesIO(requests.get(redirect["Location"], timeout=10).content)) as container:
            assert sum(1 for _ in container.decode(video=0)) == 17
    assert sum(fal_sim.submits.values()) == 6
