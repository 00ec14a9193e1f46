"""genhub on the simulated vast.ai GPU against the physical limit, and recovery after the instance dies.

1. The physical limit: N generations through a bare loop calling `SwarmUIClient` directly on a
   simulated SwarmUI with a fixed generation time T (the GPU never idles except for the loop's own
   round trips).
2. genhub: the same N jobs as one `vastai` batch through a real cluster; makespan from the instance
   being ready to the last job stored. Ratio = genhub / bare loop (goal ≤ 1.05). The GPU's idle gaps
   come from the simulator's record of when each generation held the GPU.
3. Recovery: a second batch; the instance is killed after its first job; reported are detection
   (kill → the instance leaves `ready`; kill → declared dead), provisioning (→ the replacement is ready)
   and kill → first
   job finished on the replacement.

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/genhub .venv/bin/python -m benchmarks.vast_makespan
"""

import argparse
import time

from benchmarks.harness import cluster, median, scratch_database, wait_until

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402

from gpu_instances.models import GpuInstance  # noqa: E402
from gpu_instances.qualification import SELFTEST_PROMPT  # noqa: E402
from jobs import services  # noqa: E402
from jobs.intake import UploadedFile, build_batch  # noqa: E402
from jobs.models import Job  # noqa: E402
from providers.simulators.media import make_image  # noqa: E402
from providers.simulators.swarmui import SwarmUISimulator  # noqa: E402
from providers.simulators.vastai import VastAISimulator  # noqa: E402
from providers.swarmui import SwarmUIClient, build_video_params  # noqa: E402

FRAMES = 17


def gaps(generations) -> list[float]:
    ordered = sorted((g for g in generations if g.finished_at), key=lambda g: g.started_at)
    return [later.started_at - earlier.finished_at for earlier, later in zip(ordered, ordered[1:], strict=False)]


def bare_loop(jobs: int, seconds: float) -> tuple[float, list[float]]:
    sim = SwarmUISimulator("bench-token", generation_seconds=seconds).start()
    sim.backend_status = "running"
    client = SwarmUIClient(sim.url, "bench-token", certificate=sim.certificate)
    image = make_image()
    started = time.monotonic()
    for seed in range(jobs):
        params = build_video_params(image=image, image_content_type="image/png", prompt="p", negative_prompt="",
                                    seed=seed, num_frames=FRAMES, fps=16, width=320, height=240, steps=4, cfg=1.0)
        client.generate_video(params)
    makespan = time.monotonic() - started
    sim.stop()
    return makespan, gaps(sim.generations)


def submit(owner, jobs: int, salt: int):
    files = [UploadedFile(f"b{salt}-{i}.png", make_image(color=(i * 9 % 256, salt * 50 % 256, 80)))
             for i in range(jobs)]
    spec = build_batch(provider="vastai", prompt="slow push-in", files=files, params={"num_frames": FRAMES})
    return services.batch_create(owner=owner, spec=spec)


def all_done(batch) -> bool:
    return not batch.jobs.filter(status__in=Job.ACTIVE).exists()


def run(jobs: int, seconds: float, kill_jobs: int):
    bare_makespan, bare_gaps = bare_loop(jobs, seconds)

    with scratch_database():
        owner = get_user_model().objects.create_user("bench", password="bench-password-1")
        vast = VastAISimulator(settings.VAST_API_KEY, boot_seconds=2, loading_seconds=2,
                               swarmui_generation_seconds=seconds).start()
        settings.VAST_API_URL = vast.url
        # Production pacing of genhub's own loops; only the simulated machines boot faster than real ones.
        with cluster(VAST_DISPATCH_INTERVAL=1.0, GENHUB_RECONCILE_INTERVAL=5, VAST_PACING_SCALE=1):
            batch = submit(owner, jobs, salt=1)
            wait_until(lambda: all_done(batch), timeout=jobs * seconds * 4 + 300)
            instance = GpuInstance.objects.get(state=GpuInstance.State.READY)
            last = max(batch.jobs.values_list("finished_at", flat=True))
            # Jobs may start once the instance has passed its self-test (a deliberate cost, printed apart).
            qualifying = (instance.qualified_at - instance.ready_at).total_seconds()
            genhub_makespan = (last - instance.qualified_at).total_seconds()
            sim_gaps = gaps(g for g in vast.instances[instance.vast_id].swarmui.generations
                            if g.params["prompt"] != SELFTEST_PROMPT)
            succeeded = batch.jobs.filter(status=Job.Status.SUCCEEDED).count()

            second = submit(owner, kill_jobs, salt=2)
            wait_until(lambda: second.jobs.filter(status=Job.Status.SUCCEEDED).exists(), timeout=300)
            killed_at = time.time()
            vast.kill_instance(instance.vast_id)
            wait_until(lambda: all_done(second), timeout=600)
            instance.refresh_from_db()
            left_ready = instance.events.filter(from_state=GpuInstance.State.READY).order_by("at").first().at
            declared_dead = instance.events.get(to_state=GpuInstance.State.DESTROYING).at
            replacement = GpuInstance.objects.filter(ready_at__gt=left_ready).order_by("ready_at").first()
            first_on_replacement = min(second.jobs.filter(instance=replacement).values_list("finished_at", flat=True))
            recovered = second.jobs.filter(status=Job.Status.SUCCEEDED).count()
        vast.stop()

    detection = left_ready.timestamp() - killed_at
    dead = declared_dead.timestamp() - killed_at
    provisioning = replacement.ready_at.timestamp() - declared_dead.timestamp()
    print(f"jobs: {jobs}, simulated generation time T = {seconds:.1f} s, {FRAMES} frames")
    print(f"bare SwarmUIClient loop: makespan {bare_makespan:.2f} s, median GPU idle gap "
          f"{median(bare_gaps) * 1000:.0f} ms")
    print(f"genhub (qualified → last stored): makespan {genhub_makespan:.2f} s, median GPU idle gap "
          f"{median(sim_gaps) * 1000:.0f} ms, {succeeded}/{jobs} succeeded")
    print(f"ratio genhub / bare loop: {genhub_makespan / bare_makespan:.3f}")
    print(f"qualification (ready → self-test passed, a warm-up and a measured clip): {qualifying:.1f} s")
    print(f"detection: kill → out of rotation (a job's call failed): {detection:.1f} s; "
          f"kill → declared dead and destroyed: {dead:.1f} s")
    print(f"provisioning: declared dead → replacement ready (simulated boot 4-6 s): {provisioning:.1f} s")
    print(f"kill → first job finished on the replacement: {first_on_replacement.timestamp() - killed_at:.1f} s")
    print(f"second batch after the kill: {recovered}/{kill_jobs} succeeded")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=3.0, help="simulated generation time per job")
    parser.add_argument("--kill-jobs", type=int, default=6)
    args = parser.parse_args()
    run(args.jobs, args.seconds, args.kill_jobs)
