"""The success criteria, end to end on a real django-q2 cluster process: a vastai batch survives
the death of its instance, on exactly one replacement, with nothing lost, leaked or run twice."""

import io
from collections import Counter

import av
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from gpu_instances.models import GpuInstance
from gpu_instances.qualification import SELFTEST_PROMPT
from jobs.models import Job
from providers.simulators.media import make_image
from tests.conftest import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]
S = Job.Status


def test_a_vastai_batch_finishes_when_its_instance_is_killed_mid_batch(api, vast_sim_factory, qcluster, settings):
    vast_sim = vast_sim_factory(swarmui_generation_seconds=0.6)
    images = [SimpleUploadedFile(f"shot{i}.png", make_image(color=(i * 25, 60, 200))) for i in range(10)]
    response = api.post("/api/batches/", {"provider": "vastai", "prompt": "a slow push-in", "images": images,
                                          "params": '{"num_frames": 17}'}, format="multipart")
    assert response.status_code == 201, response.content

    qcluster(GENHUB_RECONCILE_INTERVAL="0.2", VAST_HEALTH_MIN_SECONDS="1", VAST_HEALTH_TIMEOUT_SECONDS="1",
             GENHUB_STALE_JOB_SECONDS="30")
    wait_for(lambda: Job.objects.filter(status=S.SUCCEEDED).count() >= 3, timeout=90,
             message="the first jobs to finish on the first instance")
    first = GpuInstance.objects.get(state=GpuInstance.State.READY)
    vast_sim.kill_instance(first.vast_id)

    wait_for(lambda: not Job.objects.filter(status__in=Job.ACTIVE).exists(), timeout=120,
             message="every job to finish")

    jobs = list(Job.objects.select_related("instance"))
    assert [job.status for job in jobs] == [S.SUCCEEDED] * 10
    for job in jobs:
        with job.output_video.open("rb") as handle, av.open(io.BytesIO(handle.read())) as container:
            assert sum(1 for _ in container.decode(video=0)) == 17
        assert job.cost_usd is not None and job.generation_seconds > 0
    # The work really moved: some jobs ran on the replacement.
    replacement = GpuInstance.objects.get(state=GpuInstance.State.READY)
    assert {job.instance_id for job in jobs} == {first.pk, replacement.pk}

    # Exactly one replacement, the dead instance destroyed, nothing else labelled left alive.
    first.refresh_from_db()
    assert first.state == GpuInstance.State.DESTROYED and "exited" in first.end_reason
    assert GpuInstance.objects.count() == 2
    records = vast_sim.instance_records()
    assert len(records) == 2
    assert [r["id"] for r in records if not r["destroyed"]] == [replacement.vast_id]

    # No job ran twice to success: each job's seed was downloaded from SwarmUI exactly once.
    delivered = Counter()
    for sim in (vast_sim.instances[r["id"]].swarmui for r in records):
        downloaded = {path for method, path, ok in sim.request_log if method == "GET" and "/View/" in path and ok}
        for generation in (g for g in sim.generations if g.params["prompt"] != SELFTEST_PROMPT):
            if generation.output_path and any(generation.output_path.split("/")[-1].replace(" ", "%20") in path
                                              for path in downloaded):
                delivered[generation.params["seed"]] += 1
    assert sorted(delivered.values()) == [1] * 10
    assert set(delivered) == {job.seed for job in jobs}
