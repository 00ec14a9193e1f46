"""Several hosts against one PostgreSQL and one bucket: two gunicorn web servers and two task clusters run a
vastai batch through an instance kill and a fal batch at once. Leases, claims and schedules serialise the work:
no job runs twice, nothing is lost, and every result is readable through either web server."""

import io
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from gpu_instances.models import GpuInstance
from jobs.models import Job
from providers.simulators.media import make_image
from tests.conftest import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("without_qualification")]
S = Job.Status
VAST_JOBS, FAL_JOBS = 8, 10

CLUSTER_ENV = {"Q_WORKERS": "3", "FAL_POLL_INTERVAL": "0.2", "GENHUB_RECONCILE_INTERVAL": "0.2",
               "VAST_HEALTH_MIN_SECONDS": "1", "VAST_HEALTH_TIMEOUT_SECONDS": "1", "GENHUB_STALE_JOB_SECONDS": "30"}


def deploy(_host) -> None:
    from django.db import connection

    try:
        call_command("ensure_schedules", stdout=io.StringIO())
    finally:
        connection.close()  # this thread's own connection


def submit(web: str, token: str, provider: str, count: int, shade: int) -> dict:
    files = [("images", (f"{provider}{i}.png", make_image(color=(i * 25, shade, 200)), "image/png"))
             for i in range(count)]
    response = requests.post(f"{web}/api/batches/", headers={"Authorization": f"Token {token}"}, files=files,
                             data={"provider": provider, "prompt": "a slow push-in", "params": '{"num_frames": 17}'},
                             timeout=60)
    assert response.status_code == 201, response.text
    return response.json()


def delivered_by_swarmui(vast_sim) -> Counter:
    """Seed → how many of its clips genhub downloaded from any instance's SwarmUI."""
    delivered = Counter()
    for record in vast_sim.instance_records():
        swarm = vast_sim.instances[record["id"]].swarmui
        downloaded = {path for method, path, ok in swarm.request_log if method == "GET" and "/View/" in path and ok}
        for generation in swarm.generations:
            name = (generation.output_path or "").split("/")[-1].replace(" ", "%20")
            if name and any(name in path for path in downloaded):
                delivered[generation.params["seed"]] += 1
    return delivered


def test_two_web_servers_and_two_clusters_finish_a_vast_batch_through_a_kill_and_a_fal_batch_each_job_once(
        user, fal_sim, vast_sim_factory, s3, qcluster, web_server, tmp_path):
    vast_sim = vast_sim_factory(swarmui_generation_seconds=0.6)
    token = Token.objects.create(user=user).key
    # Both hosts deploy at once: the schedules are ensured from two places, as two rolling deploys would.
    with ThreadPoolExecutor(2) as deploys:
        list(deploys.map(deploy, range(2)))
    web_a, web_b = web_server(**s3.env), web_server(**s3.env)
    qcluster(**CLUSTER_ENV, **s3.env)
    qcluster(**CLUSTER_ENV, **s3.env)

    vast_batch = submit(web_a, token, "vastai", VAST_JOBS, 60)
    fal_batch = submit(web_a, token, "fal", FAL_JOBS, 140)
    wait_for(lambda: Job.objects.filter(provider="vastai", status=S.SUCCEEDED).count() >= 2, timeout=120,
             message="the first vastai jobs to finish on the first instance")
    first = GpuInstance.objects.get(state=GpuInstance.State.READY)
    vast_sim.kill_instance(first.vast_id)
    wait_for(lambda: not Job.objects.filter(status__in=Job.ACTIVE).exists(), timeout=180,
             message="every job of both batches to finish")

    # Nothing lost: every job succeeded, and each batch reads the same through the other web server.
    jobs = list(Job.objects.order_by("provider", "position"))
    assert [job.status for job in jobs] == [S.SUCCEEDED] * (VAST_JOBS + FAL_JOBS)
    for batch in (vast_batch, fal_batch):
        seen = requests.get(f"{web_b}/api/batches/{batch['id']}/", headers={"Authorization": f"Token {token}"},
                            timeout=30).json()
        assert seen["status"] == "succeeded" and {job["status"] for job in seen["jobs"]} == {"succeeded"}
    for job in jobs:
        stored = s3.get(job.output_video.name)
        for web in (web_a, web_b):
            redirect = requests.get(f"{web}/api/jobs/{job.uuid}/video", headers={"Authorization": f"Token {token}"},
                                    allow_redirects=False, timeout=30)
            assert redirect.status_code == 302, (web, redirect.text)
            assert requests.get(redirect.headers["Location"], timeout=30).content == stored

    # No job ran twice: fal got one submission per job; SwarmUI delivered one clip per job, across both
    # instances, though the work really moved to the replacement.
    vast_jobs = [job for job in jobs if job.provider == "vastai"]
    fal_jobs = [job for job in jobs if job.provider == "fal"]
    fal_seeds = Counter(request["payload"]["seed"] for request in fal_sim.requests.values())
    assert fal_seeds == Counter(job.seed for job in fal_jobs) and set(fal_seeds.values()) == {1}
    delivered = delivered_by_swarmui(vast_sim)
    assert delivered == Counter(job.seed for job in vast_jobs) and set(delivered.values()) == {1}
    replacement = GpuInstance.objects.get(state=GpuInstance.State.READY)
    assert {job.instance_id for job in vast_jobs} == {first.pk, replacement.pk}
    assert GpuInstance.objects.count() == 2
    assert [r["id"] for r in vast_sim.instance_records() if not r["destroyed"]] == [replacement.vast_id]

    # Both clusters did part of the work (each logs every task it processed).
    processed = [(tmp_path / f"qcluster-{n}.log").read_text().count("Processed") for n in range(2)]
    print("tasks processed per cluster:", processed)
    assert all(processed), processed


def test_a_rolling_deploy_hands_running_work_to_the_new_cluster_without_losing_or_repeating_a_job(
        user, fal_sim, vast_sim_factory, s3, qcluster, web_server, tmp_path):
    """New cluster started, old one sent SIGTERM mid-batch: the old one finishes what it holds and exits,
    the new one takes over through the leases and the queue; every job succeeds, each generated once."""
    import signal

    vast_sim = vast_sim_factory(swarmui_generation_seconds=1.5)
    token = Token.objects.create(user=user).key
    web = web_server(**s3.env)
    # A running pump or reconcile task keeps going until it hands over: short loops make that happen mid-batch.
    cluster_env = {**CLUSTER_ENV, "GENHUB_PUMP_SECONDS": "2", "GENHUB_RECONCILE_SECONDS": "2", **s3.env}
    old = qcluster(**cluster_env)
    vast_batch = submit(web, token, "vastai", VAST_JOBS, 60)
    submit(web, token, "fal", FAL_JOBS, 140)
    wait_for(lambda: Job.objects.filter(provider="vastai", status=S.SUCCEEDED).count() >= 2
             and Job.objects.filter(status=S.RUNNING).exists(), timeout=120,
             message="the old cluster to be in the middle of the work")

    qcluster(**cluster_env)  # the new release's cluster first, then the old one is told to stop
    old.send_signal(signal.SIGTERM)
    unfinished_at_sigterm = Job.objects.filter(status__in=Job.ACTIVE).count()
    wait_for(lambda: old.poll() is not None, timeout=300, message="the old cluster to finish its tasks and exit")
    wait_for(lambda: not Job.objects.filter(status__in=Job.ACTIVE).exists(), timeout=180,
             message="the new cluster to finish both batches")

    jobs = list(Job.objects.all())
    assert [job.status for job in jobs] == [S.SUCCEEDED] * (VAST_JOBS + FAL_JOBS)
    assert unfinished_at_sigterm > 0
    new_log = (tmp_path / "qcluster-1.log").read_text()
    assert "Processed 'jobs.tasks.run_job'" in new_log  # the new cluster really took work over
    fal_seeds = Counter(request["payload"]["seed"] for request in fal_sim.requests.values())
    assert fal_seeds == Counter(job.seed for job in jobs if job.provider == "fal")
    delivered = delivered_by_swarmui(vast_sim)
    assert delivered == Counter(job.seed for job in jobs if job.provider == "vastai")
    assert requests.get(f"{web}/api/batches/{vast_batch['id']}/", headers={"Authorization": f"Token {token}"},
                        timeout=30).json()["status"] == "succeeded"
