"""How long genhub's GPU fault handling takes with its default settings, on the simulated cloud.

1. Wedge: SwarmUI's queue stops mid-batch (keep-alives continue, status routes answer). Reported: wedge →
   the watchdog's first action (InterruptAll + requeue), wedge → the batch finished, attempts used.
   The stall limit is the default (derived, so the 90 s floor for the simulator's short clips) and the
   reconcile pacing is production's (a step every 5 s, a task every minute from the schedule).
2. Cancel: one job generating and one queued inside SwarmUI; the generating one is cancelled. Reported:
   cancel → its generation interrupted on the GPU, and whether the other job finished untouched.
3. Offline blip: vast reports the instance `offline` for 20 s while SwarmUI answers. Reported: whether the
   instance was kept, and the health events.

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/genhub .venv/bin/python -m benchmarks.gpu_faults
"""

import argparse
import time

from benchmarks.harness import cluster, scratch_database, wait_until

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402

from gpu_instances.models import GpuInstance  # noqa: E402
from jobs import services  # noqa: E402
from jobs.intake import UploadedFile, build_batch  # noqa: E402
from jobs.models import Job  # noqa: E402
from jobs.schedules import schedules_ensure  # noqa: E402
from providers.simulators.media import make_image  # noqa: E402
from providers.simulators.vastai import VastAISimulator  # noqa: E402

S = Job.Status
PRODUCTION_PACING = dict(VAST_DISPATCH_INTERVAL=1.0, GENHUB_RECONCILE_INTERVAL=5, GENHUB_RECONCILE_SECONDS=50,
                         VAST_PACING_SCALE=1)


def submit(owner, jobs: int, salt: int):
    files = [UploadedFile(f"f{salt}-{i}.png", make_image(color=(i * 9 % 256, salt * 50 % 256, 80)))
             for i in range(jobs)]
    spec = build_batch(provider="vastai", prompt="slow push-in", files=files, params={"num_frames": 17})
    return services.batch_create(owner=owner, spec=spec)


def done(batch) -> bool:
    return not batch.jobs.filter(status__in=Job.ACTIVE).exists()


def run(jobs: int, seconds: float):
    with scratch_database():
        schedules_ensure()
        owner = get_user_model().objects.create_user("bench", password="bench-password-1")
        vast = VastAISimulator(settings.VAST_API_KEY, boot_seconds=2, loading_seconds=2,
                               swarmui_generation_seconds=seconds).start()
        settings.VAST_API_URL = vast.url
        with cluster(**PRODUCTION_PACING):
            # 1. wedge
            batch = submit(owner, jobs, salt=1)
            wait_until(lambda: batch.jobs.filter(status=S.SUCCEEDED).count() >= 2, timeout=300)
            instance = GpuInstance.objects.get(state=GpuInstance.State.READY)
            swarm = vast.instances[instance.vast_id].swarmui
            swarm.wedge(1)
            wedged = time.time()
            wait_until(lambda: instance.events.filter(kind="stall").exists(), timeout=400, interval=0.2)
            first_action = instance.events.filter(kind="stall").order_by("at").first()
            wait_until(lambda: done(batch), timeout=600, interval=0.2)
            batch_done = time.time()
            wedge_ok = batch.jobs.filter(status=S.SUCCEEDED).count()
            attempts = sorted(batch.jobs.values_list("attempts", flat=True))
            print(f"wedge: stall limit default (floor {settings.SWARMUI_STALL_FLOOR_SECONDS:.0f} s), reconcile step "
                  f"every 5 s; simulated clip {seconds:.0f} s")
            print(f"  wedge → first recovery action: {first_action.at.timestamp() - wedged:.1f} s "
                  f"({first_action.message[:120]}…)")
            print(f"  wedge → batch finished: {batch_done - wedged:.1f} s; {wedge_ok}/{jobs} succeeded; "
                  f"attempts {attempts}", flush=True)

            # 2. cancel
            pair = submit(owner, 2, salt=2)
            swarm.generation_seconds = 20
            running = lambda: list(pair.jobs.filter(status=S.RUNNING).order_by("-progress"))  # noqa: E731
            wait_until(lambda: len(r := running()) == 2 and r[0].progress > 0 and r[1].progress == 0, timeout=120)
            generating, queued = running()
            target = swarm.generations[-1]  # the one holding the GPU
            services.job_cancel(job=generating)
            cancelled = time.time()
            wait_until(lambda: target.finished_at is not None, timeout=60, interval=0.02)
            freed = time.time()
            swarm.generation_seconds = seconds
            wait_until(lambda: done(pair), timeout=120)
            other = Job.objects.get(pk=queued.pk)

            # 3. offline blip
            blip = submit(owner, 4, salt=3)
            vast.offline(instance.vast_id, seconds=20)
            wait_until(lambda: done(blip), timeout=300)
            time.sleep(21)
            instance.refresh_from_db()
            health = list(instance.events.filter(kind="health", message__contains="offline")
                          .values_list("message", flat=True))
            kept = instance.state == GpuInstance.State.READY and GpuInstance.objects.count() == 1
        vast.stop()

    print(f"cancel → generation interrupted on the GPU: {freed - cancelled:.2f} s ({target.error}); the other "
          f"job: {other.status} (attempts {other.attempts})")
    print(f"offline blip 20 s: instance kept: {kept}; {len(health)} failed probe(s) counted, e.g. "
          f"{health[0] if health else '-'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="simulated generation time per job")
    args = parser.parse_args()
    run(args.jobs, args.seconds)
