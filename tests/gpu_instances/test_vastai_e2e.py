"""The success criteria, end to end on a real django-q2 cluster process: a vastai batch survives
the death of its instance, on exactly one replacement, with nothing lost, leaked or run twice."""

import io
from collections import Counter

import av
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from gpu_instances import speed
from gpu_instances.models import GpuInstance, SpeedSample
from gpu_instances.qualification import SELFTEST_PROMPT, selftest_params
from jobs.models import Job
from providers.simulators.media import make_image
from providers.simulators.vastai import make_offer
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


def test_a_slow_host_rented_first_fails_its_selftest_and_a_fast_one_finishes_the_batch(api, vast_sim_factory, qcluster):
    # Two hosts with the same GPU name: the slow one (8× the time per clip) is the cheaper per hour.
    slow, fast = 9101, 9102
    offers = [make_offer(201, slow, "H100 SXM", 1.00), make_offer(202, fast, "H100 SXM", 1.20)]
    vast_sim = vast_sim_factory(offers=offers, swarmui_generation_seconds=0.5, speed_factors={slow: 8})
    for i in range(3):  # genhub's own history: earlier H100 SXMs made the self-test clip in 0.5 s
        earlier = GpuInstance.objects.create(label=f"earlier-{i}", machine_id=5000 + i, gpu_name="H100 SXM",
                                             state=GpuInstance.State.DESTROYED, qualification="passed")
        speed.record_sample(instance=earlier, params=selftest_params(), seconds=0.5, source="selftest")
    images = [SimpleUploadedFile(f"shot{i}.png", make_image(color=(i * 40, 90, 160))) for i in range(4)]
    response = api.post("/api/batches/", {"provider": "vastai", "prompt": "a slow push-in", "images": images,
                                          "params": '{"num_frames": 17}'}, format="multipart")
    assert response.status_code == 201, response.content

    # A wide tolerance: only a really slow host fails, however loaded the test machine is.
    qcluster(GENHUB_RECONCILE_INTERVAL="0.2", VAST_QUALIFY_TOLERANCE="3")
    wait_for(lambda: not Job.objects.filter(status__in=Job.ACTIVE).exists(), timeout=180,
             message="every job to finish")

    jobs = list(Job.objects.all())
    assert [job.status for job in jobs] == [S.SUCCEEDED] * 4
    first, replacement = GpuInstance.objects.exclude(vast_id=None).order_by("created_at")
    assert (first.machine_id, first.state, first.qualification) == (slow, GpuInstance.State.DESTROYED, "failed")
    assert first.end_reason.startswith("self-test: ") and "→ replacing, avoiding machine 9101" in first.end_reason
    assert (replacement.machine_id, replacement.qualification) == (fast, "passed")
    assert {job.instance_id for job in jobs} == {replacement.pk}  # no user job ran on the slow host
    # Why each rental won: the first on the cheaper price (no record of either machine yet), the second
    # because the slow machine is now avoided.
    first_rental = first.events.get(to_state=GpuInstance.State.LOADING).message
    assert "from 3 samples on this GPU model" in first_rental and "next best H100 SXM at $1.221/h on machine 9102" \
        in first_rental, first_rental
    assert replacement.events.get(to_state=GpuInstance.State.LOADING).message.endswith("; no other offer")
    # The self-tests and every job became speed history.
    assert sorted(SpeedSample.objects.filter(machine_id__in=(slow, fast)).values_list("machine_id", "source")) == (
        [(slow, "selftest")] + [(fast, "job")] * 4 + [(fast, "selftest")])
    assert [r["destroyed"] for r in vast_sim.instance_records()] == [True, False]
