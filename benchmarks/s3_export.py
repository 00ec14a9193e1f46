"""Object storage: the memory a batch ZIP export needs when its clips are in S3, and what a download costs genhub.

Against a real S3 HTTP server (moto's server mode, started here on a free 127.0.0.1 port), a batch of
`--clips` clips of `--clip-mb` MB each is exported as genhub does it (each clip read from its response body
a chunk at a time, the archive written to the bucket as a multipart upload while it streams). It prints the
archive's size, the time, and the peak memory Python allocated meanwhile — beside the peak of reading the
same clips through django-storages' file object, which downloads a whole object before its first read.
Then the server time of an owner's video download (a presigned 302). Prints figures; asserts nothing.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

import requests


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_s3() -> tuple[subprocess.Popen, str]:
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            requests.get(f"{url}/moto-api/", timeout=1)
            return server, url
        except requests.ConnectionError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("moto_server did not start")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--clip-mb", type=float, default=8)
    args = parser.parse_args()
    server, url = _start_s3()
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    os.environ.update({"GENHUB_STORAGE": "s3", "AWS_STORAGE_BUCKET_NAME": bucket, "AWS_S3_ENDPOINT_URL": url,
                       "AWS_S3_REGION_NAME": "us-east-1", "AWS_S3_ADDRESSING_STYLE": "path",
                       "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"})
    try:
        run(args.clips, int(args.clip_mb * 1024 * 1024), bucket, url)
    finally:
        server.terminate()
        server.wait(timeout=10)


def run(clips: int, clip_bytes: int, bucket: str, url: str):
    from benchmarks.harness import scratch_database  # sets Django up with the S3 settings above

    import boto3
    from django.contrib.auth import get_user_model
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from rest_framework.test import APIClient

    from jobs import exports, services
    from jobs.intake import UploadedFile, build_batch
    from jobs.models import Job
    from providers.simulators.media import make_image

    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=bucket)
    with scratch_database():
        user = get_user_model().objects.create_user("bench", password="bench-password-1")
        files = [UploadedFile(f"img{i}.png", make_image(color=(i % 256, 9, 9))) for i in range(clips)]
        batch = services.batch_create(owner=user, spec=build_batch(provider="fal", prompt="pan", files=files,
                                                                   params={"num_frames": 17}))
        for job in batch.jobs.all():
            name = default_storage.save(f"outputs/{job.uuid}.mp4", ContentFile(os.urandom(clip_bytes)))
            Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED, output_video=name)
        jobs = list(batch.jobs.order_by("position"))

        tracemalloc.start()
        started, size = time.perf_counter(), 0
        for chunk in exports.batch_zip_kept_stream(batch, jobs):
            size += len(chunk)
        seconds = time.perf_counter() - started
        _, export_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for job in jobs:
            with default_storage.open(job.output_video.name, "rb") as source:
                while source.read(1024 * 1024):
                    pass
        _, whole_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert default_storage.exists(exports.export_name(batch, jobs))

        client = APIClient()
        client.force_login(user)
        times = []
        for job in jobs * 5:
            begun = time.perf_counter()
            response = client.get(f"/api/jobs/{job.uuid}/video")
            times.append(time.perf_counter() - begun)
            assert response.status_code == 302

    mb = 1024 * 1024
    print(f"ZIP export of {clips} clips × {clip_bytes / mb:.1f} MB from S3 to S3: {size / mb:.1f} MB in "
          f"{seconds:.2f} s ({size / mb / seconds:.0f} MB/s)")
    print(f"  peak Python memory while exporting (chunked reads, multipart upload): {export_peak / mb:.1f} MB")
    print(f"  peak Python memory reading the same clips through the storage's file object: {whole_peak / mb:.1f} MB")
    print(f"owner's video download (presigned 302), server time: median {statistics.median(times) * 1000:.1f} ms "
          f"over {len(times)} requests")


if __name__ == "__main__":
    main()
