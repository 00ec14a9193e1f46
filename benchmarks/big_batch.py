"""Batches of 10,000 on the simulators: creation, pages and polls, the fal pump's makespan, a 1,000,000-job list.

Sections (all by default; `--only NAME …` runs some):

- `makespan`: the fal pump alone at 40 in flight against the simulated fal, 200 and 1,000 jobs, one cluster.
  The simulator starts a request on its clock when it is submitted (queue, then run seconds); the ideal is
  ceil(n / 40) × (queue + run) — every slot busy from the first submit to the last result.
- `create`: a 10,000-item batch (625 images × 16 seeds) made twice, each way's time and SQL queries:
  by appending uploads (`POST /api/batches/` with the first piece, then `POST /api/batches/{id}/items/`
  pieces of ≤ `--piece` items), and by URL (one request of 10,000 items naming images on a local HTTP
  server, then the background fetcher's time and queries). The appended batch is cancelled; on the by-URL
  one: server time and bytes of the batch page, its other pages, the API's batch and a page of jobs, and
  live-page polls (`?since=`) every 2 s while a writer changes 20 jobs per second through the services.
- `run`: that batch on the simulated fal with two task clusters: time to first job started, the makespan
  against the simulator's ideal, and the clusters' memory (RSS, main process + workers) at start and end.
- `list`: 1,000,000 jobs in 1,000 batches bulk-inserted with `generate_series`; the batch list's server time.

Goals: creation ≤ 10 s, every page and poll ≤ 100 ms of server time, a poll ≤ 50 kB while 20 jobs change
per second, worker memory flat, fal makespan ≤ 1.1 × ideal.

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/genhub .venv/bin/python -m benchmarks.big_batch
"""

import argparse
import json
import math
import os
import threading
import time
from contextlib import ExitStack
from pathlib import Path

os.environ.setdefault("GENHUB_MAX_BATCH_ITEMS", "10000")  # before Django reads its settings

from benchmarks.harness import cluster, median, scratch_database, wait_cluster_working, wait_until
from benchmarks.image_urls import fetch_all, image_server, timed

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.files.uploadedfile import SimpleUploadedFile  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.db.models import Max, Min  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from jobs import services  # noqa: E402
from jobs.intake import UploadedFile, build_batch  # noqa: E402
from jobs.models import BatchRun, Job  # noqa: E402
from providers.simulators.fal import FalSimulator  # noqa: E402
from providers.simulators.media import make_image  # noqa: E402

IN_FLIGHT = 40
FRAMES = 17
S = Job.Status


# --- helpers ----------------------------------------------------------------------------------


def process_tree(pid: int) -> list[dict]:
    """A process and all its descendants (a cluster: main → sentinel → pusher, monitor, workers), each with
    its resident memory, threads and CPU seconds, from /proc; depth-first, children in pid order."""
    found, todo = [], [(pid, 0)]
    tick = os.sysconf("SC_CLK_TCK")
    while todo:
        current, depth = todo.pop()
        try:
            status = dict(line.split(":", 1) for line in Path(f"/proc/{current}/status").read_text().splitlines())
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = sorted(int(child) for task in Path(f"/proc/{current}/task").iterdir()
                              for child in (task / "children").read_text().split())
            # PSS: each shared page (libraries, what a worker inherited from the fork) divided among the
            # processes sharing it. A sum of RSS counts such a page once per process.
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        pss = next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
        found.append({"pid": current, "depth": depth, "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
                      "pss_mb": pss / 1024, "threads": int(status["Threads"]),
                      "cpu_s": (int(fields[11]) + int(fields[12])) / tick})
        todo += [(child, depth + 1) for child in reversed(children)]
    return found


def rss_mb(pid: int, kind: str = "rss_mb") -> float:
    """Resident memory of a process and all its descendants (the cluster's workers): the sum of their RSS,
    or with kind="pss_mb" of their PSS (what the cluster really holds)."""
    return sum(process[kind] for process in process_tree(pid))


def memory(pids: list[int]) -> str:
    return ", ".join(f"{rss_mb(pid):.0f} MB RSS / {rss_mb(pid, 'pss_mb'):.0f} MB PSS" for pid in pids)


def print_processes(label: str, pids: list[int]) -> None:
    """Per-process RSS of each cluster: which process grows (a worker, the one running the pump, the
    sentinel) is what tells a leak from a warm-up."""
    for number, pid in enumerate(pids, start=1):
        roles = {0: "main ", 1: "sentinel "}  # the sentinel's children: pusher, monitor, workers
        parts = [f"{roles.get(p['depth'], '')}{p['pid']} {p['rss_mb']:.0f}/{p['pss_mb']:.0f} MB {p['threads']}t "
                 f"{p['cpu_s']:.0f}s" for p in process_tree(pid)]
        print(f"  {label}, cluster {number} (pid RSS/PSS threads CPU): {'; '.join(parts)}")


def timed_get(client, url: str, repeats: int = 5) -> tuple[float, int, int]:
    """(median server time in ms, bytes, status) of GET url, in-process (no network in the figure)."""
    times, size, status = [], 0, 0
    for _ in range(repeats):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        size, status = len(response.content), response.status_code
    return median(times), size, status


def fal_sim(queue: float, run: float) -> FalSimulator:
    sim = FalSimulator(settings.FAL_KEY, queue_seconds=queue, run_seconds=run, concurrency=IN_FLIGHT).start()
    settings.FAL_QUEUE_URL = sim.url
    return sim


def small_batch(owner, jobs: int, salt: int) -> BatchRun:
    """`jobs` fal jobs through the service layer: distinct images × up to 16 seeds, cut to size."""
    files = [UploadedFile(f"m{salt}-{i}.png", make_image(width=320, height=240, color=(salt * 40 % 256, i % 256, 60)))
             for i in range(math.ceil(jobs / 16))]
    spec = build_batch(provider="fal", prompt="slow pan", files=files, params={"num_frames": FRAMES},
                       seeds_per_image=16)
    del spec.items[jobs:]
    return services.batch_create(owner=owner, spec=spec)


def makespan_of(batch: BatchRun) -> tuple[float, float]:
    """(seconds from the batch's creation to its last job finished, to its first job started)."""
    span = batch.jobs.aggregate(first=Min("started_at"), last=Max("finished_at"))
    return ((span["last"] - batch.created_at).total_seconds(), (span["first"] - batch.created_at).total_seconds())


def all_finished(batch) -> bool:
    return not batch.jobs.filter(status__in=Job.UNFINISHED).exists()


# --- sections ---------------------------------------------------------------------------------


def section_makespan(owner, sizes: list[int], queue: float, run: float, poll: float):
    print(f"\n## fal pump makespan — {IN_FLIGHT} in flight, simulator queue {queue} s + run {run} s, "
          f"FAL_POLL_INTERVAL {poll} s")
    sim = fal_sim(queue, run)
    try:
        with cluster(FAL_MAX_IN_FLIGHT=IN_FLIGHT, FAL_POLL_INTERVAL=poll, FAL_QUEUE_URL=sim.url):
            # Measured on a running deployment: a batch is not timed against a cluster still starting up.
            print(f"cluster working {wait_cluster_working():.1f} s after it was started")
            for salt, jobs in enumerate(sizes):
                batch = small_batch(owner, jobs, salt)
                wait_until(lambda b=batch: all_finished(b), timeout=jobs * (queue + run) + 600, interval=0.2)
                span, first = makespan_of(batch)
                ideal = math.ceil(jobs / IN_FLIGHT) * (queue + run)
                done = batch.jobs.filter(status=S.SUCCEEDED).count()
                print(f"{jobs:>6} jobs: makespan {span:7.1f} s, ideal {ideal:6.1f} s → {span / ideal:.3f} × ideal "
                      f"(first job started after {first:.2f} s; {done} succeeded, max at fal at once "
                      f"{sim.max_running})")
    finally:
        sim.stop()


def create_by_url(client, datas: list[bytes], seeds: int) -> str:
    """The batch as items naming their images by URL on a local HTTP server, in one request; then the
    background fetcher (in-process) fetches each distinct URL once. → the batch's id."""
    with image_server(datas) as (_, urls):
        items = [{"image_url": url, "prompt": "slow pan", "seed": seed} for url in urls for seed in range(seeds)]
        response, seconds, queries = timed(lambda: client.post(
            "/api/batches/", {"provider": "fal", "items": items, "params": {"num_frames": FRAMES}}, format="json"))
        assert response.status_code == 201, response.content[:500]
        body = response.json()
        fetched, fetch_s, fetch_q = fetch_all()
    print(f"by URL:     {body['total']} items ({len(datas)} URLs × {seeds} seeds) created in {seconds:.2f} s with "
          f"{queries} SQL queries (response {len(response.content) / 1024:.0f} kB); the fetcher then fetched "
          f"{fetched} distinct URLs in {fetch_s:.1f} s with {fetch_q} SQL queries ({fetch_q / fetched:.1f} per URL)")
    return body["id"]


def create_by_appending_uploads(client, datas: list[bytes], seeds: int, piece: int) -> str:
    """The batch as uploads: created with the first piece, the rest appended (`POST /api/batches/{id}/items/`)
    in pieces of at most `piece` items, one Idempotency-Key each, as the README tells a client to. → its id."""
    per_piece = max(1, piece // seeds)  # images per request

    def upload(start: int) -> dict:
        files = [SimpleUploadedFile(f"img{i:05}.png", datas[i], content_type="image/png")
                 for i in range(start, min(start + per_piece, len(datas)))]
        return {"prompt": "slow pan", "images": files, "seeds_per_image": str(seeds)}

    first = {**upload(0), "provider": "fal", "params": json.dumps({"num_frames": FRAMES})}
    response, create_s, create_q = timed(lambda: client.post("/api/batches/", first, format="multipart"))
    assert response.status_code == 201, response.content[:500]
    batch_id = response.json()["id"]
    times, queries = [], []
    for number, start in enumerate(range(per_piece, len(datas), per_piece), start=1):
        fields = upload(start)
        response, seconds, count = timed(lambda fields=fields, number=number: client.post(
            f"/api/batches/{batch_id}/items/", fields, format="multipart", HTTP_IDEMPOTENCY_KEY=f"piece-{number}"))
        assert response.status_code == 201, response.content[:500]
        times.append(seconds)
        queries.append(count)
    total = response.json()["total"]
    appends = (f"{len(times)} appends: median {median(times):.2f} s (max {max(times):.2f}), "
               f"{median(queries):.0f} SQL queries (max {max(queries)})" if times else "no appends")
    print(f"by uploads: {total} items ({len(datas)} uploads × {seeds} seeds) in {len(times) + 1} requests of ≤ "
          f"{per_piece * seeds} items, {create_s + sum(times):.2f} s and {create_q + sum(queries)} SQL queries in all; "
          f"creation {create_s:.2f} s, {create_q} SQL queries; {appends}")
    return batch_id


def section_create_and_pages(owner, images: int, seeds: int, piece: int, writer_rate: int, polls: int) -> str:
    print(f"\n## a {images * seeds}-item batch: creation (by URL, and by appending uploads), pages, polls")
    client = APIClient()
    client.force_login(owner)
    datas = [make_image(width=320, height=240, color=(i % 256, (i // 256) % 256, 70)) for i in range(images)]
    appended = create_by_appending_uploads(client, datas, seeds, piece)
    # The same images: stored once, by content. Only the by-URL batch goes on (pages, polls, the run).
    services.batch_cancel(batch=BatchRun.objects.get(uuid=appended))
    batch_id = create_by_url(client, datas, seeds)
    batch = BatchRun.objects.get(uuid=batch_id)
    pages = [
        ("batch page (first 50 cards)", f"/batches/{batch_id}/"),
        ("batch page 150", f"/batches/{batch_id}/?page=150"),
        ("batch page, status=queued", f"/batches/{batch_id}/?status=queued"),
        ("GET /api/batches/{id}/", f"/api/batches/{batch_id}/"),
        ("GET /api/batches/{id}/jobs/?page=100", f"/api/batches/{batch_id}/jobs/?page=100"),
        ("batch list page", "/"),
        ("GET /api/batches/", "/api/batches/"),
    ]
    for label, url in pages:
        ms, size, status = timed_get(client, url)
        print(f"{label:<40} {ms:6.1f} ms  {size / 1024:7.1f} kB  ({status})")

    # Polls while `writer_rate` jobs change per second (half claimed, half finished), as the page polls.
    stop = threading.Event()
    changed = [0]

    def writer():
        try:
            queued = iter(batch.jobs.filter(status=S.QUEUED).order_by("position").values_list("pk", flat=True))
            running = []
            while not stop.is_set():
                tick = time.monotonic()
                for _ in range(writer_rate // 2):
                    pk = next(queued)
                    services.job_claim(job_id=pk)
                    running.append(pk)
                for pk in running[:writer_rate // 2]:
                    services.job_succeed(job_id=pk, cost=0)
                running = running[writer_rate // 2:]
                changed[0] += writer_rate
                stop.wait(max(0.0, 1.0 - (time.monotonic() - tick)))
        finally:
            connections.close_all()

    cursor = client.get(f"/api/batches/{batch_id}/").json()["cursor"]
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    results = []
    try:
        for _ in range(polls):
            time.sleep(2.0)
            started = time.perf_counter()
            response = client.get(f"/api/batches/{batch_id}/jobs/", {"since": cursor})
            ms = (time.perf_counter() - started) * 1000
            answer = response.json()
            cursor = answer["cursor"]
            results.append((ms, len(response.content), len(answer["results"]), answer["resync"]))
    finally:
        stop.set()
        thread.join()
    print(f"live poll every 2 s while {writer_rate} jobs change per second ({polls} polls, {changed[0]} changes):")
    print(f"  server time median {median([r[0] for r in results]):.1f} ms, max {max(r[0] for r in results):.1f} ms; "
          f"size median {median([r[1] for r in results]) / 1024:.1f} kB, max {max(r[1] for r in results) / 1024:.1f}"
          f" kB; jobs per poll median {median([r[2] for r in results]):.0f}, max {max(r[2] for r in results)}; "
          f"resyncs {sum(1 for r in results if r[3])}")
    return batch_id


def section_run(batch_uuid: str, queue: float, run: float, poll: float, timeout: float, rss_every: float):
    batch = BatchRun.objects.get(uuid=batch_uuid)
    services.batch_retry_failed(batch=batch)
    # The poll section moved some jobs along by hand: start this run from a fresh queue.
    Job.objects.filter(batch=batch).update(status=S.QUEUED, attempts=0, started_at=None, finished_at=None,
                                           progress=0.0, cost_usd=None, external_id="", provider_ref={})
    jobs = batch.jobs.count()
    print(f"\n## the {jobs}-job batch on the simulated fal with two clusters ({IN_FLIGHT} in flight, queue {queue} s "
          f"+ run {run} s, FAL_POLL_INTERVAL {poll} s)")
    sim = fal_sim(queue, run)
    env = dict(FAL_MAX_IN_FLIGHT=IN_FLIGHT, FAL_POLL_INTERVAL=poll, FAL_QUEUE_URL=sim.url)
    try:
        with ExitStack() as stack:
            started_at = time.time()
            clusters = [stack.enter_context(cluster(**env)) for _ in range(2)]
            from jobs.tasks import pump as pump_task

            pump_task.enqueue("fal")
            time.sleep(3)
            pids = [c.pid for c in clusters]
            rss_start = memory(pids)
            first = wait_until(lambda: batch.jobs.filter(started_at__isnull=False).aggregate(m=Min("started_at"))["m"],
                               timeout=120)
            # A second sample once every worker has run tasks (imported av, PIL, …): growth from there on is
            # what "flat" is about.
            warm = min(60.0, timeout / 4)
            time.sleep(warm)
            rss_warm = memory(pids)
            print_processes(f"after {warm:.0f} s", pids)
            # The curve between, one line a minute: growth that levels off is a warm-up, growth that
            # keeps pace with the jobs done is a leak.
            deadline = time.monotonic() + timeout - warm
            finished = False
            while not finished and time.monotonic() < deadline:
                try:
                    wait_until(lambda: all_finished(batch), timeout=min(rss_every, deadline - time.monotonic()),
                               interval=1.0)
                    finished = True
                except TimeoutError:
                    done = batch.jobs.filter(status=S.SUCCEEDED).count()
                    print(f"  at {time.time() - started_at:.0f} s, {done} succeeded: clusters {memory(pids)}")
            rss_end = memory(pids)
            print_processes("end", pids)
            done = batch.jobs.filter(status=S.SUCCEEDED).count()
            last = batch.jobs.aggregate(m=Max("finished_at"))["m"]
            span = last.timestamp() - started_at if last else float("nan")
            ideal = math.ceil(done / IN_FLIGHT) * (queue + run) if done else float("nan")
            print(f"time to first job started: {first.timestamp() - started_at:.2f} s after the clusters were started")
            print(f"{done} of {jobs} succeeded{'' if finished else f' before the {timeout:.0f} s limit'}: "
                  f"makespan {span:.1f} s, ideal for them {ideal:.1f} s → {span / ideal:.3f} × ideal")
            print(f"clusters' memory (main + sentinel + workers): start {rss_start}; after {warm:.0f} s {rss_warm}; "
                  f"end {rss_end}")
    finally:
        sim.stop()


def _job_columns() -> dict:
    """Values for every column a job row needs, as SQL over `g` (the generate_series value) and `b` (batch)."""
    return {
        "uuid": "gen_random_uuid()", "batch_id": "b.id", "owner_id": "b.owner_id", "provider": "'fal'",
        "position": "g", "input_image": "'inputs/x.png'", "input_name": "'x.png'", "input_sha256": "'0'",
        "prompt": "'slow pan'", "negative_prompt": "''", "seed": "g", "params": "'{\"num_frames\": 17}'::jsonb",
        "status": "(ARRAY['succeeded','failed','queued','cancelled'])[1 + mod(g, 4)]", "progress": "0",
        "attempts": "1", "max_attempts": "3", "claims": "1", "external_id": "''", "provider_ref": "'{}'::jsonb",
        "dispatch_token": "''", "output_video": "''", "poster": "''", "video_codec": "''", "error_code": "''",
        "error_message": "''", "paused_reason": "''", "fallback_from": "''", "fallback_reason": "''",
        "cost_usd": "0.0425", "wasted_usd": "0", "pending_result": "'{}'::jsonb", "result_fetch_failures": "0",
        "created_at": "now()",
    }


def section_list(owner, total_jobs: int, batches: int):
    print(f"\n## the batch list with {total_jobs:,} jobs in {batches:,} batches")
    columns = _job_columns()
    with connection.cursor() as cursor:
        cursor.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'jobs_job' "
                       "AND is_nullable = 'NO' AND column_default IS NULL AND column_name <> 'id'")
        missing = {row[0] for row in cursor.fetchall()} - set(columns)
        assert not missing, f"the bulk insert misses NOT NULL columns: {missing}"
        started = time.perf_counter()
        cursor.execute("INSERT INTO jobs_batchrun (uuid, owner_id, name, provider, preset, params, created_at, "
                       "fallback_policy) SELECT gen_random_uuid(), %s, 'bulk ' || g, 'fal', 'draft', '{}'::jsonb, "
                       "now() - g * interval '1 minute', 'never' FROM generate_series(1, %s) AS g",
                       [owner.pk, batches])
        per_batch = total_jobs // batches
        cursor.execute(f"INSERT INTO jobs_job ({', '.join(columns)}) SELECT {', '.join(columns.values())} "
                       f"FROM jobs_batchrun b CROSS JOIN generate_series(0, %s) AS g WHERE b.name LIKE 'bulk %%'",
                       [per_batch - 1])
        cursor.execute("ANALYZE jobs_job; ANALYZE jobs_batchrun; ANALYZE jobs_batchcounts")
        print(f"inserted in {time.perf_counter() - started:.1f} s (the count triggers included)")
    client = APIClient()
    client.force_login(owner)
    for label, url in [("batch list page 1", "/"), ("batch list page 40", "/?page=40"),
                       ("GET /api/batches/", "/api/batches/"), ("GET /api/batches/?page=40", "/api/batches/?page=40")]:
        with CaptureQueriesContext(connection) as captured:
            ms, size, status = timed_get(client, url)
        joins_jobs = any("jobs_job" in q["sql"] for q in captured.captured_queries)
        print(f"{label:<30} {ms:6.1f} ms  {size / 1024:6.1f} kB  ({status}; "
              f"reads jobs: {'yes' if joins_jobs else 'no'})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=["makespan", "create", "run", "list"],
                        help="sections to run (all by default; `run` includes `create`)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--queue", type=float, default=0.5, help="simulated fal queue seconds per request")
    parser.add_argument("--run", type=float, default=4.5, help="simulated fal run seconds per request")
    parser.add_argument("--poll", type=float, default=0.25, help="FAL_POLL_INTERVAL for the clusters")
    parser.add_argument("--images", type=int, default=625)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--piece", type=int, default=1_000, help="items per request when appending uploads")
    parser.add_argument("--writer-rate", type=int, default=20)
    parser.add_argument("--polls", type=int, default=10)
    parser.add_argument("--big-queue", type=float, default=0.5, help="queue seconds for the 10,000-job run")
    parser.add_argument("--big-run", type=float, default=1.5, help="run seconds for the 10,000-job run")
    parser.add_argument("--run-timeout", type=float, default=1800)
    parser.add_argument("--rss-every", type=float, default=60, help="seconds between RSS lines during the run")
    parser.add_argument("--list-jobs", type=int, default=1_000_000)
    parser.add_argument("--list-batches", type=int, default=1_000)
    args = parser.parse_args()

    def wanted(name: str) -> bool:
        return args.only is None or name in args.only

    with scratch_database():
        owner = get_user_model().objects.create_user("bench", password="bench-password-1")
        if wanted("makespan"):
            section_makespan(owner, args.sizes, args.queue, args.run, args.poll)
        batch_uuid = None
        if wanted("create") or wanted("run"):
            batch_uuid = section_create_and_pages(owner, args.images, args.seeds, args.piece, args.writer_rate,
                                                  args.polls)
        if wanted("run"):
            section_run(batch_uuid, args.big_queue, args.big_run, args.poll, args.run_timeout, args.rss_every)
        if wanted("list"):
            section_list(owner, args.list_jobs, args.list_batches)


if __name__ == "__main__":
    main()
