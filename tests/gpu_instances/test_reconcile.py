"""The reconcile step machine against the simulated vast.ai cloud and SwarmUI, over real HTTP."""

import threading
import time

import pytest
from django.db import connection
from django.utils import timezone

from gpu_instances.models import GpuInstance
from gpu_instances.orchestrator import VastAIOrchestrator
from jobs.models import Job
from providers import instance_tls
from providers.vastai import OfferFilters, build_create_request
from tests.jobs.factories import make_batch

State = GpuInstance.State


def reconcile_until(predicate, *, timeout=10.0):
    orchestrator = VastAIOrchestrator()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        orchestrator.reconcile(max_seconds=0)
        if predicate():
            return
        time.sleep(0.05)
    states = list(GpuInstance.objects.values("vast_id", "state"))
    raise AssertionError(f"not reached in {timeout}s; instances: {states}")


def ready_instance():
    return GpuInstance.objects.filter(state=State.READY).first()


@pytest.fixture
def demand(user):
    """A vastai job waiting: the orchestrator's reason to keep an instance."""
    return make_batch(user, provider="vastai")


@pytest.mark.django_db
def test_no_demand_rents_nothing(vast_sim):
    assert VastAIOrchestrator().reconcile(max_seconds=0).startswith("idle")
    assert vast_sim.instance_records() == []


@pytest.mark.django_db
def test_it_boots_an_instance_to_ready_with_its_own_token(vast_sim, demand):
    reconcile_until(ready_instance)

    instance = ready_instance()
    (remote,) = vast_sim.instance_records()
    assert instance.vast_id == remote["id"] and instance.base_url == remote["swarmui_url"]
    assert remote["env"]["SWARMUI_AUTH_TOKEN"] == instance.swarmui_token
    assert "test-vast-key" not in str(remote["env"])
    assert [e.to_state for e in instance.events.order_by("at", "id") if e.to_state] == [State.LOADING, State.READY]


@pytest.mark.django_db
def test_a_boot_past_the_deadline_is_replaced_on_another_machine(vast_sim, demand, settings):
    settings.VAST_BOOT_DEADLINE_SECONDS = 0.3
    vast_sim.boot_seconds = 30  # the first machine never comes up in time

    reconcile_until(lambda: GpuInstance.objects.filter(state=State.DESTROYED).exists()
                    and GpuInstance.objects.filter(state__in=GpuInstance.ACTIVE_STATES).exists())

    dead = GpuInstance.objects.get(state=State.DESTROYED)
    replacement = GpuInstance.objects.get(state__in=GpuInstance.ACTIVE_STATES)
    assert "deadline" in dead.end_reason
    assert replacement.machine_id != dead.machine_id
    assert next(r for r in vast_sim.instance_records() if r["id"] == dead.vast_id)["destroyed"]


@pytest.mark.django_db
def test_one_failed_probe_does_not_kill_a_healthy_instance(vast_sim, demand):
    reconcile_until(ready_instance)
    instance = ready_instance()
    vast_sim.fail_health(instance.vast_id, 1)
    orchestrator = VastAIOrchestrator()

    orchestrator.step()
    instance.refresh_from_db()
    assert (instance.state, instance.health_failures) == (State.UNHEALTHY, 1)
    orchestrator.step()

    instance.refresh_from_db()
    assert (instance.state, instance.health_failures) == (State.READY, 0)
    assert GpuInstance.objects.count() == 1


@pytest.mark.django_db
def test_failures_must_be_spread_over_time_before_acting(vast_sim, demand, settings):
    settings.VAST_HEALTH_MIN_SECONDS = 60
    reconcile_until(ready_instance)
    instance = ready_instance()
    vast_sim.fail_health(instance.vast_id, True)

    for _ in range(5):  # five quick failures in well under a minute
        VastAIOrchestrator().step()

    instance.refresh_from_db()
    assert (instance.state, instance.health_failures) == (State.UNHEALTHY, 5)


@pytest.mark.django_db
def test_sustained_health_failure_replaces_the_instance(vast_sim, demand):
    reconcile_until(ready_instance)
    first = ready_instance()
    vast_sim.fail_health(first.vast_id, True)

    reconcile_until(lambda: (ready := ready_instance()) is not None and ready.pk != first.pk, timeout=15)

    first.refresh_from_db()
    assert first.state == State.DESTROYED and "unhealthy" in first.end_reason
    assert GpuInstance.objects.filter(state__in=GpuInstance.ACTIVE_STATES).count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["exited", "vanish"])
def test_vast_reporting_the_instance_dead_replaces_it_at_once(vast_sim, demand, mode):
    reconcile_until(ready_instance)
    first = ready_instance()
    vast_sim.kill_instance(first.vast_id, mode=mode)

    VastAIOrchestrator().step()

    first.refresh_from_db()
    assert first.state == State.DESTROYED
    assert ("exited" in first.end_reason) if mode == "exited" else ("vanished" in first.end_reason)


@pytest.mark.django_db
@pytest.mark.parametrize("generating", [True, False])
def test_running_jobs_of_a_dead_instance_go_back_to_the_queue(vast_sim, demand, generating):
    """The attempt counts for the job the GPU was generating (it may be what killed it), not for one still
    waiting in SwarmUI's queue behind it."""
    reconcile_until(ready_instance)
    instance = ready_instance()
    job = demand.jobs.get()
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, attempts=1, claims=1, instance=instance,
                                         remote_started_at=timezone.now() if generating else None)
    vast_sim.kill_instance(instance.vast_id)

    VastAIOrchestrator().step()

    job.refresh_from_db()
    assert (job.status, job.attempts) == (Job.Status.QUEUED, 1 if generating else 0)
    assert "lost" in (job.error_code if generating else job.error_message)


@pytest.mark.django_db
def test_the_leak_sweep_destroys_labelled_instances_nobody_owns(vast_sim, vast_sim_client, settings):
    first, second = vast_sim_client.search_offers(OfferFilters())[:2]
    body = build_create_request(image="x", label=settings.GENHUB_INSTANCE_LABEL, disk_gb=100, swarmui_token="t",
                                tls=instance_tls.generate())
    leaked_id = vast_sim_client.create_instance(first.id, body)
    other = vast_sim_client.create_instance(second.id, {**body, "label": "someone-else"})

    VastAIOrchestrator().reconcile(max_seconds=0)

    records = {r["id"]: r for r in vast_sim.instance_records()}
    assert records[leaked_id]["destroyed"] and not records[other]["destroyed"]
    assert GpuInstance.objects.get(vast_id=leaked_id).end_reason.startswith("leak")


@pytest.mark.django_db(transaction=True)
def test_two_reconcilers_at_once_rent_one_instance(vast_sim, user):
    make_batch(user, provider="vastai")
    barrier = threading.Barrier(2)

    def reconciler():
        try:
            barrier.wait()
            for _ in range(40):
                VastAIOrchestrator().reconcile(max_seconds=0)
                VastAIOrchestrator().step()  # also without the lease: the row claims alone must hold
                if GpuInstance.objects.filter(state=State.READY).exists():
                    break
        finally:
            connection.close()

    threads = [threading.Thread(target=reconciler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    live = [r for r in vast_sim.instance_records() if not r["destroyed"]]
    assert len(live) == 1
    assert GpuInstance.objects.filter(state__in=GpuInstance.ACTIVE_STATES).count() == 1


@pytest.mark.django_db
def test_the_instance_is_reached_over_tls_pinned_to_the_certificate_genhub_made(vast_sim, demand):
    reconcile_until(ready_instance)

    instance = ready_instance()
    (remote,) = vast_sim.instance_records()
    served = instance_tls.from_env(remote["env"])  # what the container was given and serves
    assert instance.base_url.startswith("https://") and instance.tls_certificate == served.certificate_pem
    # The private key went to the instance only: no column of the row holds it.
    key_b64 = remote["env"]["GENHUB_TLS_KEY"]
    stored = " ".join(str(value) for value in GpuInstance.objects.filter(pk=instance.pk).values().first().values())
    assert key_b64 not in stored and "PRIVATE KEY" not in stored


@pytest.mark.django_db
def test_an_instance_without_a_pinned_certificate_is_never_called_and_gets_replaced(vast_sim, demand, settings):
    """An instance rented before the channel was pinned (plain http, no certificate on its row)."""
    settings.VAST_HEALTH_FAILURES = 2
    reconcile_until(ready_instance)
    legacy = ready_instance()
    GpuInstance.objects.filter(pk=legacy.pk).update(tls_certificate="", base_url=legacy.base_url.replace(
        "https://", "http://"))
    (remote,) = vast_sim.instance_records()
    seen = len(vast_sim._swarmui(remote["id"]).request_log)

    reconcile_until(lambda: GpuInstance.objects.get(pk=legacy.pk).state == State.DESTROYED)

    assert "no pinned TLS channel" in GpuInstance.objects.get(pk=legacy.pk).end_reason
    assert len(vast_sim._swarmui(remote["id"]).request_log) == seen  # never called without the pin
