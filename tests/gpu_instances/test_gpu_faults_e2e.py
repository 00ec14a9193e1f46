"""GPU faults end to end on a real django-q2 cluster process: a SwarmUI queue that wedges mid-batch is
recovered by the progress watchdog and the batch finishes; a cancelled job frees the GPU within seconds
while the other job on the instance is not disturbed."""

import time
from collections import Counter

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from gpu_instances.models import GpuInstance
from jobs.models import Job
from providers.simulators.media import make_image
from tests.conftest import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("without_qualification")]
S = Job.Status
CLUSTER = dict(GENHUB_RECONCILE_INTERVAL="0.2", GENHUB_RECONCILE_SECONDS="300", VAST_HEALTH_MIN_SECONDS="1",
               VAST_HEALTH_TIMEOUT_SECONDS="1", GENHUB_STALE_JOB_SECONDS="60")


def submit(api, count):
    images = [SimpleUploadedFile(f"shot{i}.png", make_image(color=(i * 25, 60, 200))) for i in range(count)]
    response = api.post("/api/batches/", {"provider": "vastai", "prompt": "a slow push-in", "images": images,
                                          "params": '{"num_frames": 17}'}, format="multipart")
    assert response.status_code == 201, response.content
    return response.json()


def delivered_seeds(vast_sim) -> Counter:
    """How many times each seed's video was downloaded from SwarmUI (a clip generated and taken twice shows 2)."""
    delivered = Counter()
    for record in vast_sim.instance_records():
        sim = vast_sim.instances[record["id"]].swarmui
        downloaded = {path for method, path, ok in sim.request_log if method == "GET" and "/View/" in path and ok}
        for generation in sim.generations:
            if generation.output_path and any(generation.output_path.split("/")[-1].replace(" ", "%20") in path
                                              for path in downloaded):
                delivered[generation.params["seed"]] += 1
    return delivered


def test_a_wedge_during_a_batch_is_interrupted_and_the_batch_finishes(api, vast_sim_factory, qcluster):
    vast_sim = vast_sim_factory(swarmui_generation_seconds=0.6)
    submit(api, 6)
    qcluster(SWARMUI_STALL_SECONDS="3", **CLUSTER)
    wait_for(lambda: Job.objects.filter(status=S.SUCCEEDED).count() >= 2, timeout=90, message="the first clips")
    instance = GpuInstance.objects.get(state=GpuInstance.State.READY)
    swarm = vast_sim._swarmui(instance.vast_id)
    swarm.keep_alive_seconds = 0.5  # the socket stays open and busy on keep-alives while nothing advances
    swarm.wedge(1)
    wedged_at = time.monotonic()

    wait_for(lambda: instance.events.filter(kind="stall").exists(), timeout=60, message="the watchdog's first step")
    recovered_after = time.monotonic() - wedged_at
    wait_for(lambda: not Job.objects.filter(status__in=Job.ACTIVE).exists(), timeout=120, message="the batch")

    jobs = list(Job.objects.all())
    assert [job.status for job in jobs] == [S.SUCCEEDED] * 6
    # The interrupted jobs went back without using up an attempt; the instance was kept.
    assert [job.attempts for job in jobs] == [1] * 6
    assert GpuInstance.objects.count() == 1
    assert any(other for _, other in swarm.interrupts)  # InterruptAll over every session
    assert any(g.wedged and g.error == "Generation session interrupted." for g in swarm.generations)
    assert sorted(delivered_seeds(vast_sim).values()) == [1] * 6
    print(f"wedge → first recovery action: {recovered_after:.1f}s (stall limit 3s)")


def test_cancelling_a_generating_job_frees_the_gpu_and_leaves_the_other_job_alone(api, vast_sim_factory, qcluster):
    vast_sim = vast_sim_factory(swarmui_generation_seconds=6.0)
    submit(api, 2)
    qcluster(**CLUSTER)
    pair = []

    def one_generating_one_queued():
        # Which of the two reaches the GPU first is up to the workers.
        jobs = list(Job.objects.filter(status=S.RUNNING).order_by("-progress"))
        if len(jobs) == 2 and jobs[0].progress > 0 and jobs[1].progress == 0:
            pair[:] = [str(job.uuid) for job in jobs]
            return True
        return False

    wait_for(one_generating_one_queued, timeout=90, message="one job generating, the other queued in SwarmUI")
    first_uuid, second_uuid = pair
    instance = GpuInstance.objects.get(state=GpuInstance.State.READY)
    swarm = vast_sim._swarmui(instance.vast_id)

    assert api.post(f"/api/jobs/{first_uuid}/cancel/").status_code == 200
    cancelled_at = time.monotonic()
    wait_for(lambda: swarm.generations[0].error is not None, timeout=10, message="the GPU to be freed")
    freed_after = time.monotonic() - cancelled_at
    wait_for(lambda: Job.objects.get(uuid=second_uuid).status == S.SUCCEEDED, timeout=60,
             message="the other job to finish")

    first, second = swarm.generations
    assert first.error == "Generation session interrupted." and second.error is None
    assert [other for _, other in swarm.interrupts] == [False]  # only the cancelled job's own session
    assert Job.objects.get(uuid=first_uuid).status == S.CANCELLED
    assert len(swarm.generations) == 2
    instance.refresh_from_db()
    assert instance.state == GpuInstance.State.READY
    print(f"cancel → GPU free: {freed_after:.1f}s")
