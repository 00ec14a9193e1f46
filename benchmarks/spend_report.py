"""A 50-item batch on each provider against the simulators: actual cost, the other-provider estimate, saving.

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/genhub .venv/bin/python -m benchmarks.spend_report

The simulated GPU generates a clip in T seconds (default 1.5) and rents at the simulated offer's $/h; the
simulated fal bills nothing itself: genhub prices its clips with fal's price list, as it does for real.
"""

import argparse

from benchmarks.harness import cluster, scratch_database, wait_until

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402

from gpu_instances.models import GpuInstance  # noqa: E402
from gpu_instances.services import instance_costs  # noqa: E402
from jobs import selectors, services  # noqa: E402
from jobs.intake import UploadedFile, build_batch  # noqa: E402
from jobs.models import Job  # noqa: E402
from jobs.spend import vast_seconds_per_clip  # noqa: E402
from providers.simulators.fal import FalSimulator  # noqa: E402
from providers.simulators.media import make_image  # noqa: E402
from providers.simulators.vastai import VastAISimulator  # noqa: E402

PARAMS = {"num_frames": 81, "resolution": "480p"}


def run_batch(owner, provider: str, items: int):
    files = [UploadedFile(f"{provider}-{i}.png", make_image(color=(i * 5 % 256, 40, 200))) for i in range(items)]
    batch = services.batch_create(owner=owner, spec=build_batch(provider=provider, prompt="slow push-in",
                                                                files=files, params=PARAMS))
    wait_until(lambda: not batch.jobs.filter(status__in=Job.ACTIVE).exists(), timeout=items * 20 + 300)
    return selectors.batch_get(user=owner, batch_uuid=batch.uuid)


def report(batch) -> None:
    comparison = selectors.batch_cost_comparison(batch)
    print(f"{batch.provider} batch: {batch.n_succeeded}/{batch.n_total} succeeded")
    print(f"  actual cost (sum of its jobs):          ${comparison.actual}")
    print(f"  on {comparison.other_provider} it would have cost:      ${comparison.other_estimate}"
          f"   ({comparison.basis})")
    print(f"  saving by choosing {batch.provider}:              ${comparison.saving}")


def run(items: int, seconds: float):
    with scratch_database():
        owner = get_user_model().objects.create_user("bench", password="bench-password-1")
        vast = VastAISimulator(settings.VAST_API_KEY, boot_seconds=2, loading_seconds=2,
                               swarmui_generation_seconds=seconds).start()
        fal = FalSimulator(settings.FAL_KEY, queue_seconds=0.5, run_seconds=seconds, concurrency=10).start()
        settings.VAST_API_URL, settings.FAL_QUEUE_URL = vast.url, fal.url
        with cluster(FAL_POLL_INTERVAL=0.5, GENHUB_RECONCILE_INTERVAL=1):
            gpu_batch = run_batch(owner, "vastai", items)
            instance = GpuInstance.objects.get(state=GpuInstance.State.READY)
            billed, attributed, overhead = instance_costs(instance)
            fal_batch = run_batch(owner, "fal", items)
        vast.stop()
        fal.stop()
        print(f"{items} items, {PARAMS['num_frames']} frames at {PARAMS['resolution']}; simulated GPU: "
              f"{instance.gpu_name} at ${instance.dph_usd}/h, {seconds} s per clip "
              f"(measured median {vast_seconds_per_clip():.2f} s of GPU per clip)")
        report(gpu_batch)
        print(f"  the instance so far: billed ${billed}, used by jobs ${attributed}, overhead (boot, idle) ${overhead}")
        report(fal_batch)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args()
    run(args.items, args.seconds)
