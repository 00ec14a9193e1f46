"""`./dev manage` runs management commands with the environment `./dev run` gives its processes."""

import os
import subprocess
from pathlib import Path

import pytest
from django.db import connection

from gpu_instances.models import GpuInstance

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.django_db(transaction=True)
# What `./dev run` would find unset on a fresh machine (the test settings put them in os.environ).
PROVIDER_VARS = ("FAL_KEY", "FAL_QUEUE_URL", "VAST_API_KEY", "VAST_API_URL", "SWARMUI_IMAGE", "GENHUB_SIMULATED")


def dev_manage(*args, run_dir: Path, media_root: Path) -> subprocess.CompletedProcess:
    db = connection.settings_dict
    env = {key: value for key, value in os.environ.items()
           if key not in PROVIDER_VARS and not key.startswith(("PYTEST", "DJANGO_SETTINGS"))}
    env.update(GENHUB_RUN_DIR=str(run_dir), DEBUG="1", SECRET_KEY="dev-manage-test", MEDIA_ROOT=str(media_root),
               DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
               VAST_PACING_SCALE="0")
    return subprocess.run([str(ROOT / "dev"), "manage", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def write_sim_env(run_dir: Path, *, pid: int, vast_url: str, vast_key: str) -> None:
    run_dir.mkdir(exist_ok=True)
    (run_dir / "sim.env").write_text(f"# dev run pid {pid}\nVAST_API_KEY={vast_key}\nVAST_API_URL={vast_url}\n"
                                     "SWARMUI_IMAGE=genhub/swarmui:simulated\nGENHUB_SIMULATED=1\n")


def test_it_uses_the_simulators_that_dev_run_started(vast_sim, settings, tmp_path, media_root):
    # This test process stands in for the running `./dev run` that wrote the file.
    write_sim_env(tmp_path / "run", pid=os.getpid(), vast_url=vast_sim.url, vast_key=settings.VAST_API_KEY)

    result = dev_manage("ensure_instance", run_dir=tmp_path / "run", media_root=media_root)

    assert result.returncode == 0, result.stderr
    assert "requested a new instance; renting one" in result.stdout
    assert "vast.ai is not configured" not in result.stderr
    assert GpuInstance.objects.filter(requested_by="operator").exists()
    # The next step rents it from the simulated cloud named in sim.env.
    reconciled = dev_manage("reconcile", run_dir=tmp_path / "run", media_root=media_root)
    assert reconciled.returncode == 0, reconciled.stderr
    assert "rented vast #" in reconciled.stdout
    assert len(vast_sim.instance_records()) == 1


def test_without_keys_or_simulators_it_says_the_providers_are_not_configured(tmp_path, media_root):
    result = dev_manage("ensure_instance", run_dir=tmp_path / "run", media_root=media_root)

    assert result.returncode == 1
    assert "fal is not configured: FAL_KEY is unset" in result.stderr
    assert "vast.ai is not configured: VAST_API_KEY is unset" in result.stderr
    assert "VAST_API_KEY is not set" in result.stderr
    assert not GpuInstance.objects.exists()


def test_it_ignores_the_settings_of_a_dev_run_that_has_stopped(vast_sim, settings, tmp_path, media_root):
    write_sim_env(tmp_path / "run", pid=_dead_pid(), vast_url=vast_sim.url,
                  vast_key=settings.VAST_API_KEY)

    result = dev_manage("ensure_instance", run_dir=tmp_path / "run", media_root=media_root)

    assert result.returncode == 1
    assert "no longer running" in result.stderr and "VAST_API_KEY is not set" in result.stderr
    assert vast_sim.instance_records() == []


def _dead_pid() -> int:
    """The id of a process that has exited."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid
