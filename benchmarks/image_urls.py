"""Items by URL and appends: a 10,000-item batch sent as one creation and appended pieces, then its images
fetched by the background fetcher from a local HTTP server.

Prints the request time and SQL queries of the creation and of each append (they must not grow with the
batch), of a retried append (answered from its Idempotency-Key), and the fetcher's throughput and SQL
queries per image at GENHUB_IMAGE_FETCH_CONCURRENCY. The server is on loopback, so the figures are genhub's
own cost per image, not a network's.
"""

import argparse
import contextlib
import io
import time

from benchmarks.harness import median, scratch_database

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from PIL import Image  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from jobs import fetching  # noqa: E402
from jobs.models import Job  # noqa: E402
from tests.jobs.image_server import ImageServer  # noqa: E402


def distinct_png(i: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (i % 256, (i // 256) % 256, (i // 65536) % 256)).save(buffer, format="PNG")
    return buffer.getvalue()


@contextlib.contextmanager
def image_server(images: list[bytes]):
    """A local HTTP server on 127.0.0.1 serving `images` → (server, their URLs in order)."""
    server = ImageServer()
    server.files.update({f"/img{i:05}.png": data for i, data in enumerate(images)})
    try:
        yield server, [f"{server.url}/img{i:05}.png" for i in range(len(images))]
    finally:
        server.stop()


@contextlib.contextmanager
def statements_counted():
    """Counts every SQL statement on this connection (CaptureQueriesContext keeps only the last 9,000)."""
    counted = [0]

    def count(execute, sql, params, many, context):
        counted[0] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        yield counted


def timed(call):
    """→ (what `call()` returned, its seconds, its SQL statements)."""
    with statements_counted() as counted:
        started = time.perf_counter()
        response = call()
        return response, time.perf_counter() - started, counted[0]


def fetch_all() -> tuple[int, float, int]:
    """Runs the background fetcher in-process until no job waits for its image → (URLs settled, seconds,
    SQL statements)."""
    fetched, seconds, statements = timed(fetching.fetch_waiting)
    assert not Job.objects.filter(status=Job.Status.FETCHING).exists()
    return fetched, seconds, statements


def run(items: int, piece: int, concurrency: int):
    settings.GENHUB_MAX_BATCH_ITEMS = items
    settings.GENHUB_IMAGE_FETCH_CONCURRENCY = concurrency
    with image_server([distinct_png(i) for i in range(items)]) as (server, urls), scratch_database():
        user = get_user_model().objects.create_user("bench", password="bench-password-1")
        client = APIClient()
        client.force_login(user)

        first = [{"image_url": url, "prompt": "slow pan"} for url in urls[:piece]]
        response, create_s, create_q = timed(lambda: client.post(
            "/api/batches/", {"provider": "fal", "items": first, "params": {"num_frames": 81}}, format="json"))
        assert response.status_code == 201, response.content[:500]
        batch = response.json()["id"]

        times, queries = [], []
        for number, start in enumerate(range(piece, items, piece)):
            body = {"items": [{"image_url": url, "prompt": "slow pan"} for url in urls[start:start + piece]]}
            response, seconds, count = timed(lambda body=body, number=number: client.post(
                f"/api/batches/{batch}/items/", body, format="json", HTTP_IDEMPOTENCY_KEY=f"piece-{number}"))
            assert response.status_code == 201, response.content[:500]
            times.append(seconds)
            queries.append(count)
        replay, replay_s, replay_q = timed(lambda: client.post(
            f"/api/batches/{batch}/items/", {"items": [{"image_url": url, "prompt": "slow pan"}
                                                       for url in urls[piece:2 * piece]]},
            format="json", HTTP_IDEMPOTENCY_KEY="piece-0"))
        assert replay.status_code == 200 and Job.objects.count() == items

        fetched, fetch_s, fetch_q = fetch_all()
        assert fetched == items
    print(f"batch:                          {items} items by URL, sent as 1 creation + {len(times)} appends of {piece}")
    print(f"creation, {piece} items:          {create_s:.2f} s, {create_q} SQL queries")
    print(f"append, {piece} items (median):   {median(times):.2f} s (max {max(times):.2f}), "
          f"{median(queries):.0f} SQL queries (max {max(queries)})")
    print(f"retried append (same key):      {replay_s:.2f} s, {replay_q} SQL queries, nothing appended")
    print(f"fetch, {items} distinct images:  {fetch_s:.1f} s = {items / fetch_s:.0f} images/s at concurrency "
          f"{concurrency}; {fetch_q / items:.1f} SQL queries per image")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--piece", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    run(args.items, args.piece, args.concurrency)
