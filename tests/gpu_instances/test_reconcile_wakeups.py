"""No lost wake-ups: a reconcile or pump asked for while another holds the lease is served by the holder."""

import threading

import pytest
from django.db import connection

from gpu_instances.orchestrator import VastAIOrchestrator
from jobs import dispatch

pytestmark = pytest.mark.django_db(transaction=True)


def in_own_connection(call):
    def run():
        try:
            call()
        finally:
            connection.close()

    return run


def test_a_reconcile_asked_for_while_another_runs_is_served_by_the_holder(monkeypatch):
    entered, go_on = threading.Event(), threading.Event()
    steps = []

    def step(self):
        steps.append(threading.current_thread().name)
        if len(steps) == 1:
            entered.set()
            go_on.wait(10)
        return "idle", False  # nothing more to follow: the holder would let go now

    monkeypatch.setattr(VastAIOrchestrator, "step", step)
    holder = threading.Thread(target=in_own_connection(lambda: VastAIOrchestrator().reconcile(max_seconds=30)),
                              name="holder")
    holder.start()
    assert entered.wait(10)

    assert VastAIOrchestrator().reconcile(max_seconds=30).startswith("skipped")
    go_on.set()
    holder.join(10)

    assert steps == ["holder", "holder"]  # the request that arrived mid-step got a step of its own


def test_a_pump_asked_for_while_another_runs_is_served_by_the_holder(monkeypatch, settings):
    entered, go_on = threading.Event(), threading.Event()
    passes = []

    def one_pass(provider, collector=None):
        passes.append(threading.current_thread().name)
        if len(passes) == 1:
            entered.set()
            go_on.wait(10)
        return False  # nothing unfinished

    monkeypatch.setattr(dispatch, "_pump_pass", one_pass)
    holder = threading.Thread(target=in_own_connection(lambda: dispatch.provider_pump(provider_name="vastai")),
                              name="holder")
    holder.start()
    assert entered.wait(10)

    assert dispatch.provider_pump(provider_name="vastai").startswith("skipped")
    go_on.set()
    holder.join(10)

    assert passes == ["holder", "holder"]
