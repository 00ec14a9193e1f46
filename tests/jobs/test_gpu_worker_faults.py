"""A worker streaming a generation on the GPU: database blips in its callbacks never abandon the generation
or lose its paid result, and a cancel reaches SwarmUI. Real PostgreSQL (connections really terminated),
the simulated vast.ai and SwarmUI over real HTTP, the worker's code run in this process."""

import threading
import uuid
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from gpu_instances.models import GpuInstance
from jobs import dispatch, outcomes, services, worker_run
from jobs.models import Job
from providers.errors import ProviderError
from providers.registry import get_provider
from tests.conftest import wait_for
from tests.gpu_instances.test_reconcile import ready_instance, reconcile_until
from tests.jobs.factories import make_batch
from tests.test_processes import ended_process

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("without_qualification")]
S = Job.Status


@pytest.fixture
def gpu(vast_sim_factory, settings):
    settings.GENHUB_RECONCILE_INTERVAL = 0.05
    sim = vast_sim_factory(swarmui_generation_seconds=2.0)
    return sim


def claimed_job(user, **batch_kwargs):
    batch = make_batch(user, provider="vastai", **batch_kwargs)
    reconcile_until(ready_instance)
    job = batch.jobs.order_by("position").first()
    token = uuid.uuid4().hex
    assert services.job_claim(job_id=job.pk, dispatch_token=token)
    return job, token


def terminate_my_connection():
    """What a database restart or failover does to this worker: its server process is gone."""
    pid = connection.connection.info.backend_pid
    db = connection.settings_dict
    with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"],
                         autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 10000)", [pid])


def generations(sim):
    return [g for r in sim.instance_records() for g in sim.instances[r["id"]].swarmui.generations]


def test_a_database_error_in_the_progress_callback_does_not_abandon_the_generation(gpu, user, monkeypatch):
    job, token = claimed_job(user)
    real_heartbeat = services.job_heartbeat
    cut = []

    def heartbeat(**kwargs):
        if kwargs.get("progress") is not None and not cut:
            cut.append(True)
            terminate_my_connection()
        return real_heartbeat(**kwargs)

    monkeypatch.setattr(services, "job_heartbeat", heartbeat)

    assert worker_run.job_run_dispatched(job_id=job.pk, dispatch_token=token) == S.SUCCEEDED

    assert cut
    job.refresh_from_db()
    assert job.output_video and job.attempts == 1
    assert len(generations(gpu)) == 1


def test_a_finished_generation_is_recorded_once_the_database_is_back(gpu, user, monkeypatch, settings):
    settings.GENHUB_DB_RETRY_SECONDS = 30
    job, token = claimed_job(user)
    real_succeed = services.job_succeed
    calls = []

    def succeed(**kwargs):
        calls.append(True)
        if len(calls) == 1:
            # A query first: Django's connection health check (armed by the worker's reconnect) has then
            # been spent, so the cut below reaches the write itself, as a failover mid-write would.
            Job.objects.filter(pk=0).exists()
            terminate_my_connection()  # the database goes away just as the paid result is recorded
        return real_succeed(**kwargs)

    monkeypatch.setattr(services, "job_succeed", succeed)

    assert worker_run.job_run_dispatched(job_id=job.pk, dispatch_token=token) == S.SUCCEEDED

    assert len(calls) == 2
    job.refresh_from_db()
    assert job.status == S.SUCCEEDED and job.output_video and job.cost_usd is not None
    assert len(generations(gpu)) == 1


def test_cancelling_a_generating_job_interrupts_it_in_swarmui_within_seconds(gpu, user):
    gpu.swarmui_generation_seconds = 30  # far longer than the test may wait
    job, token = claimed_job(user)

    def work():
        try:
            worker_run.job_run_dispatched(job_id=job.pk, dispatch_token=token)
        finally:
            connection.close()  # this thread's own

    worker = threading.Thread(target=work)
    worker.start()
    wait_for(lambda: Job.objects.get(pk=job.pk).progress_at is not None and generations(gpu), timeout=20,
             message="the generation to start on the GPU")

    assert services.job_cancel(job=Job.objects.get(pk=job.pk))
    worker.join(15)

    assert not worker.is_alive()
    (generation,) = generations(gpu)
    assert generation.error == "Generation session interrupted."
    instance = GpuInstance.objects.get(state=GpuInstance.State.READY)
    assert Job.objects.get(pk=job.pk).status == S.CANCELLED
    # The instance stays in rotation: a cancel is not trouble with the GPU.
    assert instance.state == GpuInstance.State.READY


def terminate_every_connection():
    """Every genhub connection to the database is cut (a failover): the worker's and its heartbeat's."""
    db = connection.settings_dict
    with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"],
                         autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")


def test_a_generation_survives_every_database_connection_being_cut_mid_way(gpu, user, monkeypatch):
    gpu.swarmui_generation_seconds = 3.0  # the heartbeat thread has its own connection open by mid-way
    job, token = claimed_job(user)
    real_heartbeat = services.job_heartbeat
    cut = []

    def heartbeat(**kwargs):
        if (kwargs.get("progress") or 0) >= 0.5 and not cut:
            cut.append(True)
            terminate_every_connection()
        return real_heartbeat(**kwargs)

    monkeypatch.setattr(services, "job_heartbeat", heartbeat)

    assert worker_run.job_run_dispatched(job_id=job.pk, dispatch_token=token) == S.SUCCEEDED

    assert cut
    assert len(generations(gpu)) == 1
    assert Job.objects.get(pk=job.pk).output_video


def test_cancelling_the_batch_interrupts_its_generating_job(gpu, user):
    gpu.swarmui_generation_seconds = 30
    job, token = claimed_job(user)

    def work():
        try:
            worker_run.job_run_dispatched(job_id=job.pk, dispatch_token=token)
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    wait_for(lambda: Job.objects.get(pk=job.pk).progress_at is not None and generations(gpu), timeout=20,
             message="the generation to start on the GPU")

    assert services.batch_cancel(batch=job.batch) == 1
    worker.join(15)

    assert not worker.is_alive()
    (generation,) = generations(gpu)
    assert generation.error == "Generation session interrupted."


class GenerationWithoutItsWorker(threading.Thread):
    """A generation as a worker sent it, whose worker then died: nothing of that worker is left to stop
    it or to collect its clip."""

    def __init__(self, job):
        super().__init__(daemon=True)
        self.job, self.claim = job, job.claims + 1  # the claim `claimed_job` made
        self.provider = get_provider("vastai")
        self.placement = self.provider.placement()
        services.job_place(job_id=job.pk, claim=self.claim, instance_id=self.placement["instance_id"])
        self.job.claims = self.claim

    def run(self):
        try:
            self.provider.submit(outcomes.generation_request(self.job), placement=self.placement,
                                 on_remote=lambda ref: services.job_record_remote_work(
                                     job_id=self.job.pk, claim=self.claim, ref=ref))
        except ProviderError:
            pass
        finally:
            connection.close()

    def died(self):
        """What the database holds after a SIGKILL: the job names a worker process that no longer runs,
        and its last beat is fresh (a heartbeat-only sweep would leave it for GENHUB_STALE_JOB_SECONDS)."""
        Job.objects.filter(pk=self.job.pk).update(worker=ended_process(), remote_started_at=timezone.now())


def run_again(job) -> str:
    """The requeued job's next attempt, as the pump and a worker run it."""
    token = uuid.uuid4().hex
    assert services.job_claim(job_id=job.pk, dispatch_token=token)
    return worker_run.job_run_dispatched(job_id=job.pk, dispatch_token=token)


def test_a_job_whose_worker_process_died_is_requeued_at_once_and_its_generation_interrupted(gpu, user):
    """A SIGKILLed worker leaves its generation running in SwarmUI. The sweep must not wait for the beats to
    go stale, and must stop that generation: the GPU would otherwise finish a clip nobody collects. With
    nothing finished to collect, the next attempt generates the clip."""
    from django_q.models import OrmQ

    gpu.swarmui_generation_seconds = 30  # far longer than the test may wait
    job, token = claimed_job(user)
    assert services.job_take_dispatch(job_id=job.pk, dispatch_token=token)
    worker = GenerationWithoutItsWorker(job)
    worker.start()
    wait_for(lambda: Job.objects.get(pk=job.pk).provider_ref.get("session_id") and generations(gpu), timeout=20,
             message="the generation to start on its recorded session")
    worker.died()
    ref = Job.objects.get(pk=job.pk).provider_ref

    assert services.jobs_sweep_stale(provider_name="vastai") == 1

    requeued = Job.objects.get(pk=job.pk)
    assert (requeued.status, requeued.attempts, requeued.error_code) == (S.QUEUED, 1, "worker_lost")
    assert requeued.lost_work == ref and ref["work"] == f"{job.uuid}:{worker.claim}"
    (cancel,) = [row.task for row in OrmQ.objects.all() if row.task["func"] == "jobs.tasks.cancel_remote"]
    assert cancel["args"] == ("vastai", ref)
    dispatch.job_cancel_remote(provider_name="vastai", ref=ref)
    wait_for(lambda: generations(gpu)[0].error, timeout=15, message="the orphaned generation to end")
    assert generations(gpu)[0].error == "Generation session interrupted."
    worker.join(15)

    gpu.swarmui_generation_seconds = 0.5
    assert run_again(requeued) == S.SUCCEEDED
    assert [g.error for g in generations(gpu)] == ["Generation session interrupted.", None]


def test_a_clip_finished_after_its_worker_died_is_collected_not_generated_again(gpu, user):
    """The worker died once SwarmUI had the clip but before genhub stored it (or the cluster was down
    longer than the generation): the next attempt finds that clip by its tag and takes it."""
    job, token = claimed_job(user)
    assert services.job_take_dispatch(job_id=job.pk, dispatch_token=token)
    worker = GenerationWithoutItsWorker(job)
    worker.start()
    worker.join(30)  # SwarmUI finished and saved it; its worker never stored it
    worker.died()
    assert services.jobs_sweep_stale(provider_name="vastai") == 1

    assert run_again(Job.objects.get(pk=job.pk)) == S.SUCCEEDED

    job.refresh_from_db()
    (generation,) = generations(gpu)  # generated once
    assert generation.error is None and job.output_video and job.lost_work == {}
    assert job.attempts == 2 and job.cost_usd is not None and job.generation_seconds > 0


def test_a_worker_that_only_missed_beats_is_requeued_but_its_session_is_left_to_it(gpu, user, settings):
    """A live worker whose beats were late (a slow database) stops its own generation once it sees the job
    taken; genhub does not interrupt that session from outside, since the worker may reuse it."""
    from django_q.models import OrmQ

    job, token = claimed_job(user)
    assert services.job_take_dispatch(job_id=job.pk, dispatch_token=token)
    Job.objects.filter(pk=job.pk).update(provider_ref={"instance_id": 1, "session_id": "s", "work": "w:1"},
                                         heartbeat_at=timezone.now() - timedelta(hours=1))

    assert services.jobs_sweep_stale(provider_name="vastai") == 1
    assert not [row for row in OrmQ.objects.all() if row.task["func"] == "jobs.tasks.cancel_remote"]
    # Its clip is still looked for by the next attempt, which must not interrupt that session either.
    assert Job.objects.get(pk=job.pk).lost_work == {"instance_id": 1, "work": "w:1"}


def test_lost_work_taken_over_by_an_attempt_that_could_not_start_goes_back_with_the_job(user):
    """The GPU went away between dispatch and start: the next attempt must still look for that clip."""
    job = make_batch(user, provider="vastai").jobs.get()
    lost = {"instance_id": 1, "session_id": "s", "work": f"{job.uuid}:1"}
    Job.objects.filter(pk=job.pk).update(lost_work=lost)
    token = uuid.uuid4().hex
    assert services.job_claim(job_id=job.pk, dispatch_token=token)
    assert services.job_take_dispatch(job_id=job.pk, dispatch_token=token)
    taken = Job.objects.get(pk=job.pk)
    assert (taken.provider_ref, taken.lost_work) == (lost, {})

    assert services.job_release(job_id=job.pk, claim=taken.claims, reason="no GPU instance is ready")

    assert Job.objects.get(pk=job.pk).lost_work == lost


def test_a_job_whose_instance_left_ready_before_its_generation_was_sent_goes_back_without_using_an_attempt(
        gpu, user, monkeypatch):
    job, token = claimed_job(user)
    real_place = services.job_place

    def place_then_a_probe_fails(**kwargs):
        placed = real_place(**kwargs)
        GpuInstance.objects.filter(pk=kwargs["instance_id"]).update(state=GpuInstance.State.UNHEALTHY)
        return placed

    monkeypatch.setattr(services, "job_place", place_then_a_probe_fails)

    assert worker_run.job_run_dispatched(job_id=job.pk, dispatch_token=token) == S.QUEUED

    job.refresh_from_db()
    assert (job.attempts, job.claims) == (0, 1)
    assert generations(gpu) == []
