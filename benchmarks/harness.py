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
from django.test.utils import setup_test_environment  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def scratch_database():
    """A fresh `test_<name>` database, migrated, dropped afterwards."""
    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        yield
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


@contextlib.contextmanager
def cluster(**extra_env):
    """A real `manage.py qcluster` on the scratch database."""
    db = connection.settings_dict
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "MEDIA_ROOT": str(settings.MEDIA_ROOT), "FAL_QUEUE_URL": settings.FAL_QUEUE_URL,
           "VAST_API_URL": settings.VAST_API_URL, "Q_POLL": "0.1",
           **{key: str(value) for key, value in extra_env.items()}}
    log = open(Path(tempfile.gettempdir()) / "genhub-bench-qcluster.log", "w")
    process = subprocess.Popen([sys.executable, "manage.py", "qcluster"], env=env, cwd=ROOT, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)  # the main process only (django-q2 guide §A.4.4)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


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
