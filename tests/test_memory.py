"""The cluster's workers stay small: what they run is loaded before they are forked, and freed native memory
goes back to the OS after a pump's decoding."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from genhub import memory
from jobs import artifacts
from providers.simulators.media import make_image, make_video


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1])


def test_freed_decode_buffers_are_given_back_on_glibc():
    clip = make_video(make_image(), frames=17, fps=16, width=640, height=480)
    with ThreadPoolExecutor(8) as pool:  # as the pump's collector decodes
        list(pool.map(lambda _: artifacts.inspect_video(clip), range(64)))
    before = rss_kb()

    assert memory.release_freed_memory()  # this suite runs on glibc
    assert rss_kb() <= before


def test_without_malloc_trim_nothing_is_called(monkeypatch):
    monkeypatch.setattr(memory, "_libc", lambda: None)

    assert memory.release_freed_memory() is False


def modules_after_setup(command: str) -> set[str]:
    """The modules a fresh `manage.py <command>` process holds once Django is set up."""
    script = ("import json, sys; sys.argv = ['manage.py', sys.argv[1]]; import django; django.setup(); "
              "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", script, command], capture_output=True, text=True, check=True,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "genhub.settings"}, timeout=120)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_cluster_process_loads_what_its_workers_run_before_it_forks_them():
    """Loaded there, the modules are shared by every forked worker instead of loaded again by each."""
    cluster = modules_after_setup("qcluster")

    assert set(memory.WORKER_MODULES) <= cluster and "av" in cluster
    assert "jobs.dispatch" not in modules_after_setup("migrate")  # other commands do not pay for it
