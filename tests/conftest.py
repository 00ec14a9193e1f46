"""Shared fixtures: users and clients, isolated media storage, and the simulated outside world."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from providers.simulators.fal import FalSimulator
from providers.simulators.media import make_image
from providers.simulators.vastai import VastAISimulator
from providers.vastai import DEFAULT_MIN_INTERVALS, VastAIClient


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user("alice", password="alice-password-1")


@pytest.fixture
def other_user(db):
    return get_user_model().objects.create_user("bob", password="bob-password-1")


@pytest.fixture
def api(user):
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def fal_sim(settings):
    """A simulated fal queue on a real port; the settings point the provider at it."""
    sim = FalSimulator(key=settings.FAL_KEY, queue_seconds=0.1, run_seconds=0.2).start()
    settings.FAL_QUEUE_URL = sim.url
    yield sim
    sim.stop()


@pytest.fixture
def png():
    return make_image()


@pytest.fixture
def qcluster(settings, media_root, tmp_path):
    """Starts real `manage.py qcluster` processes on the test database; stops them at teardown.

    The cluster is a separate process (not sync mode, not forked from pytest), so tests using it
    need `django_db(transaction=True)` for it to see their rows.
    """
    import os
    import signal
    import subprocess
    import sys

    processes = []

    def start(**extra_env):
        env = subprocess_env(settings, media_root, **{"Q_POLL": "0.2", **extra_env})
        log = open(tmp_path / f"qcluster-{len(processes)}.log", "w")
        # A session of its own, so `kill` can take the whole cluster (main process, sentinel, pusher,
        # monitor, workers) down at once, as an OOM killer or a lost host would.
        process = subprocess.Popen([sys.executable, "manage.py", "qcluster"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=settings.BASE_DIR, start_new_session=True)
        processes.append((process, log))
        return process

    def kill(process):
        """SIGKILL to every process of the cluster: nothing gets to clean up."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)

    start.kill = kill
    yield start
    for process, log in processes:
        if process.poll() is None:
            # SIGTERM to the main process only: a group signal can deadlock django-q2 (django-q2).
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kill(process)
        log.close()


def terminate_connections() -> int:
    """`pg_terminate_backend` on every connection to the test database but this test's own: what a
    database restart or failover does to the cluster's processes. Returns how many were cut."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0]


def subprocess_env(settings, media_root, **extra_env) -> dict:
    """The environment for a genhub process the suite starts (a cluster, a web server): the test database,
    this test's media and simulators, and `extra_env` on top."""
    import os

    from django.db import connection

    db = connection.settings_dict
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "genhub.test_settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "MEDIA_ROOT": str(media_root),
        "FAL_QUEUE_URL": settings.FAL_QUEUE_URL,
        "VAST_API_URL": settings.VAST_API_URL,
        "VAST_QUALIFY": "1" if settings.VAST_QUALIFY else "0",
        **{key: str(value) for key, value in extra_env.items()},
    }


@pytest.fixture
def without_qualification(settings):
    """For tests about something else than the self-test: a ready instance takes jobs at once (here and in the
    clusters the test starts), so the simulators' generations are the jobs' alone."""
    settings.VAST_QUALIFY = False


def wait_for(predicate, *, timeout: float, interval: float = 0.25, message: str = "condition"):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")



# Pacing is proven by its own test; elsewhere it would only slow the suite down.
VAST_SIM_MIN_INTERVALS = dict.fromkeys(DEFAULT_MIN_INTERVALS, 0.0)


@pytest.fixture
def vast_sim_factory(settings):
    """Starts simulated vast.ai clouds (stopped after the test); the last one started is `VAST_API_URL`."""
    started = []

    def start(**kwargs):
        kwargs.setdefault("api_key", settings.VAST_API_KEY)
        kwargs.setdefault("boot_seconds", 0.2)
        kwargs.setdefault("loading_seconds", 0.2)
        kwargs.setdefault("swarmui_generation_seconds", 0.2)
        sim = VastAISimulator(**kwargs).start()
        started.append(sim)
        settings.VAST_API_URL = sim.url
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def vast_sim(vast_sim_factory):
    """A simulated vast.ai cloud with the default offers; settings.VAST_API_URL points at it."""
    return vast_sim_factory()


@pytest.fixture
def vast_sim_client(vast_sim, settings):
    """A VastAIClient for `vast_sim`, built from the settings, without pacing."""
    return VastAIClient(settings.VAST_API_URL, settings.VAST_API_KEY, min_intervals=VAST_SIM_MIN_INTERVALS)


@pytest.fixture
def drain(settings):
    """Runs queued django-q2 tasks in this process, oldest first, ticking the schedules as the cluster would.

    For tests that follow a flow through pumps, workers and reconcile deterministically: each pump or
    reconcile task makes one pass and hands over, so one thread can interleave them.
    """
    import time
    from pydoc import locate

    from django_q.models import OrmQ

    from jobs.schedules import SCHEDULES

    settings.GENHUB_PUMP_SECONDS = 0
    settings.GENHUB_RECONCILE_SECONDS = 0
    scheduled = [locate(fields["func"]) for fields in SCHEDULES.values()]

    def run(*, until, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        ran = 0
        while not until():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached in {timeout}s ({ran} tasks run)")
            row = OrmQ.objects.order_by("id").first()
            if row is None or ran % 5 == 0:
                for func in scheduled:  # a scheduler tick
                    func()
            if row is not None:
                task = row.task
                row.delete()
                locate(task["func"])(*task["args"], **task["kwargs"])
            ran += 1
            time.sleep(0.01)

    return run
