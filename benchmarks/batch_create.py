"""How long creating a 500-item batch through the API takes, and how many SQL queries the request makes.

The query count must not grow with the number of items: the request stores the images (files, no SQL),
inserts the batch and bulk-inserts the jobs, and enqueues one pump task.
"""

import argparse
import time
from pathlib import Path

from benchmarks.harness import median, scratch_database

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.files.uploadedfile import SimpleUploadedFile  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from providers.simulators.media import make_image  # noqa: E402


def run(items: int, repeats: int):
    # Distinct small images per run (each one is decoded, hashed and stored: no run reuses a stored file),
    # made outside the timing.
    runs = [[make_image(width=320, height=240, color=(i % 256, (i // 256) % 256, 40 * run)) for i in range(items)]
            for run in range(repeats)]
    with scratch_database():
        user = get_user_model().objects.create_user("bench", password="bench-password-1")
        client = APIClient()
        client.force_login(user)
        times, queries = [], []
        for images in runs:
            files = [SimpleUploadedFile(f"img{i:04}.png", data, content_type="image/png")
                     for i, data in enumerate(images)]
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                response = client.post("/api/batches/", {"provider": "fal", "prompt": "slow pan", "images": files,
                                                         "params": '{"num_frames": 81}'}, format="multipart")
                times.append(time.perf_counter() - started)
            assert response.status_code == 201, response.content[:500]
            assert response.json()["total"] == items
            queries.append(len(captured))
        small = []
        for _ in range(repeats):
            files = [SimpleUploadedFile(f"s{i}.png", data) for i, data in enumerate(runs[0][:5])]
            with CaptureQueriesContext(connection) as captured:
                client.post("/api/batches/", {"provider": "fal", "prompt": "p", "images": files}, format="multipart")
            small.append(len(captured))
    stored = sum(1 for path in Path(settings.MEDIA_ROOT, "inputs").rglob("*.png"))
    print(f"items per batch:           {items} ({stored} distinct input files stored)")
    print(f"request time (median of {repeats}): {median(times):.2f} s  (min {min(times):.2f}, max {max(times):.2f})")
    print(f"per item:                  {median(times) / items * 1000:.1f} ms")
    print(f"SQL queries, {items} items:   {median(queries):.0f}")
    print(f"SQL queries, 5 items:      {median(small):.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    run(args.items, args.repeats)
