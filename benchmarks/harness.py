"""Shared set-up for the benchmark scripts: a throwaway PostgreSQL database, a real cluster, a user.

Benchmarks print figures; they assert nothing. Run them from the repository root, e.g.
`DATABASE_URL=postgres://postgres@127.0.0.1:5432/genhub .venv/bin/python -m benchmarks.batch_create`.
"""

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genhub.test_settings")
os.environ.setdefault("MEDIA_ROOT", tempfile.mkdtemp(prefix="genhub-bench-media-"))

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import setup_test_environment, teardown_test_environment  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def scratch_database():
    """A fresh `test_<name>` database, migrated, dropped afterwards (any connection left on it is cut first).
    Can be entered again after it exits, for a second run on a clean database."""
    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    try:
        connection.creation.create_test_db(verbosity=0, autoclobber=True)
        try:
            yield
        finally:
            terminate_backends()
            connection.creation.destroy_test_db(old_name, verbosity=0)
    finally:
        teardown_test_environment()


def terminate_backends() -> int:
    """`pg_terminate_backend` on every other connection to this database (what a failover or an admin
    does); returns how many were cut. The caller's own connection stays."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0]


def cluster_env(**extra_env) -> dict:
    db = connection.settings_dict
    return {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "MEDIA_ROOT": str(settings.MEDIA_ROOT), "FAL_QUEUE_URL": settings.FAL_QUEUE_URL,
            "VAST_API_URL": settings.VAST_API_URL, "Q_POLL": "0.1",
            **{key: str(value) for key, value in extra_env.items()}}


class Cluster:
    """A real `manage.py qcluster` in a process group of its own, so that a fault can SIGKILL all of it
    (main, guard, workers, monitor, pusher) the way the OOM killer or a lost host would, and start it again."""

    def __init__(self, log_path: Path, **extra_env):
        self.log_path = log_path
        self.extra_env = extra_env
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> "Cluster":
        log = open(self.log_path, "a")
        log.write(f"--- start {self.starts + 1} at {time.time():.3f}\n")
        log.flush()
        self.process = subprocess.Popen([sys.executable, "manage.py", "qcluster"], env=cluster_env(**self.extra_env),
                                        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()  # the child holds its own copy
        self.starts += 1
        return self

    def kill(self) -> None:
        """SIGKILL the whole group at once: nothing gets to clean up, leases and claims stay behind."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        """SIGTERM to the main process only (a group signal can deadlock django-q2), then SIGKILL what is left."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self.kill()


@contextlib.contextmanager
def cluster(**extra_env):
    """A real `manage.py qcluster` on the scratch database."""
    env = cluster_env(**extra_env)
    log = open(Path(tempfile.gettempdir()) / "genhub-bench-qcluster.log", "w")
    process = subprocess.Popen([sys.executable, "manage.py", "qcluster"], env=env, cwd=ROOT, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)  # the main process only (a group signal can deadlock django-q2)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def wait_cluster_working(timeout: float = 120) -> float:
    """Waits until a started cluster runs tasks (a no-op task's result is saved): figures measured from a
    batch's creation are then those of a running deployment, not of a cluster still forking its workers.
    → seconds waited."""
    from django_q.tasks import async_task, result

    started = time.monotonic()
    task_id = async_task("math.sqrt", 4.0, task_name="benchmark: is the cluster working")
    wait_until(lambda: result(task_id) is not None, timeout=timeout, interval=0.05)
    return time.monotonic() - started


def wait_until(predicate, *, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"benchmark condition not reached in {timeout}s")


def median(values):
    return statistics.median(values) if values else float("nan")
