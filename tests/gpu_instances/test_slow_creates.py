"""Creates that answer late or not at all: the instance they made is adopted, never destroyed and bought again."""

import time

import pytest

from gpu_instances.models import GpuInstance
from gpu_instances.orchestrator import VastAIOrchestrator
from providers import instance_tls
from providers.vastai import build_create_request
from tests.jobs.factories import make_batch

pytestmark = pytest.mark.django_db
State = GpuInstance.State


@pytest.fixture
def demand(user):
    return make_batch(user, provider="vastai")


@pytest.fixture
def short_create_timeout(settings):
    settings.VAST_CREATE_TIMEOUT_SECONDS = 0.5
    settings.VAST_CREATE_RESOLVE_SECONDS = 5


def reconcile_until(predicate, *, timeout=15.0):
    orchestrator = VastAIOrchestrator()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        orchestrator.step()
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not reached; instances: {list(GpuInstance.objects.values('vast_id', 'state'))}")


def paid(sim) -> list[dict]:
    return sim.instance_records()


def test_a_create_is_given_the_read_timeout_of_vasts_own_client(vast_sim_client, settings, vast_sim):
    settings.VAST_CREATE_TIMEOUT_SECONDS = 3
    vast_sim.slow_create(seconds=1.0)  # slower than a probe, well inside vast's 120 s

    body = build_create_request(image="img:1", label="genhub", disk_gb=100, swarmui_token="t",
                                tls=instance_tls.generate())
    assert vast_sim_client.create_instance(101, body) == paid(vast_sim)[0]["id"]


@pytest.mark.parametrize("make", ["before", "after"])
def test_an_unanswered_create_is_adopted_not_bought_again(vast_sim, demand, short_create_timeout, make):
    vast_sim.slow_create(seconds=1.5, make=make)

    reconcile_until(lambda: GpuInstance.objects.filter(state=State.READY).exists())

    instance = GpuInstance.objects.get()
    (remote,) = paid(vast_sim)
    assert instance.vast_id == remote["id"] and not remote["destroyed"]
    assert instance.events.filter(kind="adopt").exists()
    assert "adopted" in instance.events.filter(kind="adopt").get().message


def test_a_create_answered_with_a_5xx_after_renting_is_adopted(vast_sim, demand, short_create_timeout):
    vast_sim.slow_create(seconds=0, status=502)

    reconcile_until(lambda: GpuInstance.objects.filter(state=State.LOADING).exists())

    assert [r["destroyed"] for r in paid(vast_sim)] == [False]
    assert GpuInstance.objects.get().vast_id == paid(vast_sim)[0]["id"]


def test_the_leak_sweep_leaves_an_unresolved_creates_instance_alone(vast_sim, demand, short_create_timeout):
    vast_sim.slow_create(seconds=1.5, make="before")
    orchestrator = VastAIOrchestrator()
    assert "not answered" in orchestrator.step()[0]

    orchestrator._sweep_leaks()

    assert [r["destroyed"] for r in paid(vast_sim)] == [False]


def test_three_slow_creates_in_a_row_rent_at_most_two_instances(vast_sim, demand, short_create_timeout):
    vast_sim.slow_create(3, seconds=1.5, make="after")

    reconcile_until(lambda: GpuInstance.objects.filter(state=State.READY).exists(), timeout=30)
    time.sleep(2)  # any create still under way on vast's side lands now
    for _ in range(3):
        VastAIOrchestrator().step()

    records = paid(vast_sim)
    assert len(records) <= 2
    assert len([r for r in records if not r["destroyed"]]) == 1
    assert GpuInstance.objects.get(state=State.READY).vast_id in {r["id"] for r in records}


def test_a_create_that_made_nothing_is_given_up_after_the_resolve_window(vast_sim, demand, settings):
    settings.VAST_CREATE_TIMEOUT_SECONDS = 0.5
    settings.VAST_CREATE_RESOLVE_SECONDS = 0.5
    vast_sim.slow_create(seconds=0, make="never", status=503)  # a 503 that really rented nothing

    reconcile_until(lambda: GpuInstance.objects.filter(state=State.LOADING).exists())

    instance = GpuInstance.objects.get()
    assert len(paid(vast_sim)) == 1 and instance.vast_id == paid(vast_sim)[0]["id"]
    assert instance.events.filter(message__contains="renting again").exists()


def test_without_the_token_echoed_only_a_single_instance_created_in_the_window_is_adopted(
        vast_sim, demand, short_create_timeout, monkeypatch):
    from providers import vastai

    monkeypatch.setattr(vastai, "_env_value", lambda extra_env, name: None)  # vast shows no env
    vast_sim.slow_create(seconds=1.5, make="before")

    reconcile_until(lambda: GpuInstance.objects.filter(state=State.LOADING).exists())

    (remote,) = paid(vast_sim)
    assert GpuInstance.objects.get().vast_id == remote["id"] and not remote["destroyed"]
