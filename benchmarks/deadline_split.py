"""A deadline the GPU alone cannot meet: does genhub meet it, and how close to the cheapest split?

Per run, on a fresh database with a real cluster, the simulated vast.ai cloud (a fixed generation time
per clip, `--seconds`) and the simulated fal queue (a fixed turnaround, `--fal-seconds`, 40 at once):

1. warm-up: a few clips on the GPU and on fal, so genhub has measured both (as it would have in use);
2. a `--jobs` vastai batch whose deadline is `--share` of the time the GPU alone would need;
3. reported: deadline met, jobs moved to fal and their spend; the offline optimum from the known
   speeds (as many clips on the GPU as fit before the deadline, the rest on fal); the ETA error at
   half-way, |ETA when 50 % of the jobs were done − actual finish| / actual duration.

Goals: the deadline met in every run, fal spend ≤ 1.1 × the optimum, ETA error at half-way ≤ 10 %.

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/genhub .venv/bin/python -m benchmarks.deadline_split
"""

import argparse
import json
import math
import subprocess
import sys
import time
from datetime import timedelta
from decimal import Decimal

from benchmarks.harness import cluster, median, scratch_database, wait_until

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db.models import Sum  # noqa: E402
from django.utils import timezone  # noqa: E402

from jobs import services  # noqa: E402
from jobs.costs import fal_cost  # noqa: E402
from jobs.eta import batch_eta, gpu_seconds_per_clip  # noqa: E402
from jobs.intake import UploadedFile, build_batch  # noqa: E402
from jobs.models import Job  # noqa: E402
from providers.simulators.fal import FalSimulator  # noqa: E402
from providers.simulators.media import make_image  # noqa: E402
from providers.simulators.vastai import VastAISimulator  # noqa: E402

PARAMS = {"num_frames": 17}
MARGIN_SECONDS = 1.0  # GENHUB_DEADLINE_MARGIN_SECONDS, scaled down with the clip time


def submit(owner, provider: str, jobs: int, salt: int, deadline=None):
    files = [UploadedFile(f"d{salt}-{i}.png", make_image(color=(i * 7 % 256, salt * 40 % 256, 90)))
             for i in range(jobs)]
    spec = build_batch(provider=provider, prompt="slow push-in", files=files, params=PARAMS,
                       deadline=deadline.isoformat() if deadline else None)
    return services.batch_create(owner=owner, spec=spec)


def done(batch) -> bool:
    return not batch.jobs.filter(status__in=Job.UNFINISHED).exists()


def one_run(jobs: int, seconds: float, fal_seconds: float, share: float) -> dict:
    with scratch_database():
        owner = get_user_model().objects.create_user("bench", password="bench-password-1")
        vast = VastAISimulator(settings.VAST_API_KEY, boot_seconds=1, loading_seconds=1,
                               swarmui_generation_seconds=seconds).start()
        fal = FalSimulator(settings.FAL_KEY, queue_seconds=0.1, run_seconds=fal_seconds, concurrency=40).start()
        settings.VAST_API_URL, settings.FAL_QUEUE_URL = vast.url, fal.url
        settings.GENHUB_DEADLINE_MARGIN_SECONDS = MARGIN_SECONDS
        try:
            with cluster(VAST_DISPATCH_INTERVAL=0.2, GENHUB_RECONCILE_INTERVAL=0.5, VAST_PACING_SCALE=0,
                         FAL_POLL_INTERVAL=0.3, FAL_MAX_IN_FLIGHT=40, GENHUB_DEADLINE_MARGIN_SECONDS=MARGIN_SECONDS):
                warm = [submit(owner, "vastai", 8, salt=1), submit(owner, "fal", 3, salt=2)]
                wait_until(lambda: all(done(b) for b in warm), timeout=300)

                deadline = timezone.now() + timedelta(seconds=share * jobs * seconds)
                batch = submit(owner, "vastai", jobs, salt=3, deadline=deadline)
                submitted = batch.created_at
                half_eta, trace = None, []
                while not done(batch):
                    finished = batch.jobs.filter(status__in=Job.TERMINAL).count()
                    if half_eta is None and finished >= jobs / 2:
                        half_eta = batch_eta(batch).at
                    trace.append(((timezone.now() - submitted).total_seconds(), finished,
                                  batch.jobs.filter(provider="fal").count()))
                    time.sleep(0.2)
                    if timezone.now() > deadline + timedelta(seconds=jobs * seconds * 2):
                        raise TimeoutError("the batch did not finish")
                finish = max(batch.jobs.values_list("finished_at", flat=True))
                moved = batch.jobs.filter(provider="fal")
                succeeded = batch.jobs.filter(status=Job.Status.SUCCEEDED).count()
                fal_jobs = moved.count()
                spend = Decimal(moved.aggregate(total=Sum("cost_usd"))["total"] or 0)
                clip_price = fal_cost(batch.jobs.first().params)
                gpu_jobs = batch.jobs.filter(provider="vastai")
                first_start = min(gpu_jobs.values_list("started_at", flat=True))
                last_end = max(gpu_jobs.values_list("finished_at", flat=True))
                instance = gpu_jobs.first().instance
                estimate = gpu_seconds_per_clip(instance=instance, params=PARAMS)
                # What the simulated GPU really took per clip, by its own clock (its timers stretch under load).
                made = [g.finished_at - g.started_at for g in vast.instances[instance.vast_id].swarmui.generations
                        if g.finished_at][-gpu_jobs.count():]
                actual_seconds = sum(made) / len(made)
        finally:
            vast.stop()
            fal.stop()
        # Offline: the GPU makes one clip per `seconds` from submission; what does not fit goes to fal.
        window = (deadline - submitted).total_seconds()
        best_fal = jobs - min(jobs, math.floor(window / seconds))
        # The same from the simulated GPU's actual generation times (no genhub overhead in it either).
        actual_fal = jobs - min(jobs, math.floor(window / actual_seconds))
        duration = (finish - submitted).total_seconds()
        return {
            "met": finish <= deadline, "late_s": (finish - deadline).total_seconds(), "fal_jobs": fal_jobs,
            "spend": spend, "best_fal": best_fal, "best_spend": best_fal * clip_price,
            "actual_fal": actual_fal, "actual_spend": actual_fal * clip_price, "actual_seconds": actual_seconds,
            "eta_error": abs((half_eta - finish).total_seconds()) / duration if half_eta else float("nan"),
            "duration": duration, "succeeded": succeeded,
            "gpu_wall_per_clip": (last_end - first_start).total_seconds() / gpu_jobs.count(),
            "gpu_measured_per_clip": estimate.median,
            # When the moves happened: (seconds after submission, jobs finished, jobs on fal so far).
            "moves": [point for i, point in enumerate(trace) if i == 0 or point[2] != trace[i - 1][2]],
        }


def run(runs: int, jobs: int, seconds: float, fal_seconds: float, share: float) -> None:
    results = []
    for number in range(1, runs + 1):
        # One process per run: each gets a fresh database, cluster and simulators.
        out = subprocess.run([sys.executable, "-m", "benchmarks.deadline_split", "--one", "--jobs", str(jobs),
                              "--seconds", str(seconds), "--fal-seconds", str(fal_seconds), "--share", str(share)],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1], parse_float=float)
        for key in ("spend", "best_spend", "actual_spend"):
            r[key] = Decimal(r[key])
        results.append(r)
        ratio = r["spend"] / r["best_spend"] if r["best_spend"] else float("nan")
        print(f"run {number}: deadline {'met' if r['met'] else 'MISSED'} ({r['late_s']:+.1f} s vs the deadline), "
              f"{r['succeeded']}/{jobs} succeeded in {r['duration']:.1f} s; "
              f"fal {r['fal_jobs']} jobs ${r['spend']:.4f}; "
              f"offline optimum {r['best_fal']} jobs ${r['best_spend']:.4f} (× {ratio:.3f}), from the simulator's "
              f"actual {r['actual_seconds']:.3f} s per clip {r['actual_fal']} jobs "
              f"(× {r['spend'] / r['actual_spend']:.3f}); "
              f"ETA error at half-way {r['eta_error']:.1%}; GPU {r['gpu_wall_per_clip']:.3f} s per clip wall, "
              f"{r['gpu_measured_per_clip']:.3f} s measured; moves (s, finished, on fal): {r['moves'][:6]}",
              flush=True)
    print(f"{jobs} jobs, {seconds} s per GPU clip (GPU alone {jobs * seconds:.0f} s), fal {fal_seconds} s per clip "
          f"40 at once, deadline at {share:.0%} of the GPU-alone time, {runs} runs")
    print(f"deadline met: {sum(r['met'] for r in results)}/{runs}; median finish vs deadline "
          f"{median([r['late_s'] for r in results]):+.1f} s")
    print(f"fal jobs: median {median([r['fal_jobs'] for r in results])} (optimum "
          f"{median([r['best_fal'] for r in results])}); fal spend median "
          f"${median([r['spend'] for r in results]):.4f} vs optimum ${median([r['best_spend'] for r in results]):.4f} "
          f"(× {median([float(r['spend'] / r['best_spend']) for r in results]):.3f}); against the simulated GPU's "
          f"actual speed: optimum {median([r['actual_fal'] for r in results])} jobs "
          f"(× {median([float(r['spend'] / r['actual_spend']) for r in results]):.3f})")
    print(f"ETA error at half-way: median {median([r['eta_error'] for r in results]):.1%}, "
          f"worst {max(r['eta_error'] for r in results):.1%}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=0.8, help="simulated GPU generation time per clip")
    parser.add_argument("--fal-seconds", type=float, default=3.0, help="simulated fal run time per clip")
    parser.add_argument("--share", type=float, default=0.6, help="deadline as a share of the GPU-alone time")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # one run, JSON out (internal)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.jobs, args.seconds, args.fal_seconds, args.share), default=str))
    else:
        run(args.runs, args.jobs, args.seconds, args.fal_seconds, args.share)
