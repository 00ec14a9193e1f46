"""Leases: short terms kept alive by the holder, wake-ups that are never lost, release on a dead connection."""

import threading
import time
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from genhub.leases import HeldLease, lease_acquire
from genhub.models import Lease
from genhub.processes import this_process
from tests.conftest import wait_for
from tests.test_processes import ended_process

pytestmark = pytest.mark.django_db(transaction=True)  # holders renew from threads with their own connections


def terminate_backend(pid: int) -> None:
    """`pg_terminate_backend` from a connection of its own, as an operator or a failover would."""
    db = connection.settings_dict
    with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"],
                         autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 10000)", [pid])


def test_a_caller_that_finds_the_lease_held_makes_the_holder_run_another_pass():
    lease = HeldLease.acquire("loop")
    assert lease is not None

    assert lease_acquire(name="loop") is None  # a wake-up arriving while the holder works

    assert lease.release() is False  # the holder may not let go yet: it owes a pass
    assert Lease.objects.get(name="loop").holder == lease.holder
    assert lease.release() is True  # that pass done, nothing new asked for
    assert Lease.objects.get(name="loop").holder == ""


def test_a_live_holder_keeps_its_short_lease_however_long_a_step_takes(settings):
    settings.GENHUB_LEASE_SECONDS = 0.6
    lease = HeldLease.acquire("loop")
    time.sleep(1.5)  # one long step: more than two terms

    assert lease_acquire(name="loop") is None
    assert not lease.lost.is_set()
    lease.hand_over()


def test_a_dead_holders_lease_lapses_within_its_term_and_a_waiting_caller_takes_it(settings):
    settings.GENHUB_LEASE_SECONDS = 1.0
    # Held by a process that died right after renewing: nobody renews it any more.
    Lease.objects.create(name="loop", holder="dead", expires_at=timezone.now() + timedelta(seconds=1))

    assert lease_acquire(name="loop") is None  # an ordinary caller records its wake-up and goes
    started = time.monotonic()
    holder = lease_acquire(name="loop", wait=3)

    assert holder and holder != "dead"
    assert time.monotonic() - started < 3


def test_a_holder_whose_process_ended_on_this_machine_is_taken_over_at_once():
    # A lease taken by a process that was SIGKILLed since: its term has a long way to run.
    Lease.objects.create(name="loop", holder="dead", expires_at=timezone.now() + timedelta(minutes=10),
                         process=ended_process(), wake_requested=True)

    holder = lease_acquire(name="loop")  # no waiting: the holder is certainly gone

    assert holder and holder != "dead"
    assert Lease.objects.get(name="loop").process == this_process()


def test_a_holder_whose_process_runs_keeps_its_lease():
    lease = HeldLease.acquire("loop")
    assert Lease.objects.get(name="loop").process == this_process()

    assert lease_acquire(name="loop") is None
    assert not lease.lost.is_set()
    lease.hand_over()


def test_a_waiting_caller_leaves_a_live_holder_alone(settings):
    settings.GENHUB_LEASE_SECONDS = 0.9
    lease = HeldLease.acquire("loop")

    assert lease_acquire(name="loop", wait=5) is None  # the renewal shows the holder is alive
    assert Lease.objects.get(name="loop").holder == lease.holder
    assert lease.release() is False  # and it owes the caller a pass
    lease.hand_over()


def test_the_release_reconnects_when_the_holders_connection_was_terminated():
    lease = HeldLease.acquire("loop")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    terminate_backend(pid)

    assert lease.release() is True
    assert Lease.objects.get(name="loop").holder == ""


def test_two_racing_callers_never_both_hold_the_lease():
    holders = []
    barrier = threading.Barrier(4)

    def race():
        barrier.wait()
        holders.append(lease_acquire(name="loop"))
        connection.close()

    threads = [threading.Thread(target=race) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len([h for h in holders if h]) == 1
    wait_for(lambda: Lease.objects.get(name="loop").wake_requested, timeout=5, message="the wake-ups")
