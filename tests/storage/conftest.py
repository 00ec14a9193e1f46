"""A real S3 HTTP server for the suite: moto's server mode in its own process on a free 127.0.0.1 port.

Not an in-process mock: genhub, the cluster processes and the web servers all reach it over HTTP, with
the same botocore code path (signing, multipart, presigned URLs, Range) they use against real S3.
Each test gets a bucket of its own; the settings point `default_storage` at it, and `s3.env` holds the
same settings for subprocesses.
"""

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import requests

from genhub import storage as genhub_storage

REGION = "us-east-1"
# moto accepts any key pair; these are set in the environment (as in production) so boto3 finds them there.
TEST_KEYS = {"AWS_ACCESS_KEY_ID": "genhub-test-key-id", "AWS_SECRET_ACCESS_KEY": "genhub-test-secret-key"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """The moto server's URL, started once per session and stopped at its end."""
    for name, value in TEST_KEYS.items():
        os.environ[name] = value  # the suite's own boto3 and every subprocess it starts find them here
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    log = open(log_path, "w")
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(f"{url}/moto-api/", timeout=1)
            break
        except requests.ConnectionError:
            if server.poll() is not None or time.monotonic() > deadline:
                log.close()
                raise RuntimeError(f"moto_server did not start: {log_path.read_text()[-2000:]}") from None
            time.sleep(0.1)
    yield url
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


@dataclass
class S3:
    url: str
    bucket: str
    client: object
    env: dict

    def keys(self, prefix: str = "") -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()


@pytest.fixture
def s3(s3_server, settings):
    """A fresh bucket on the S3 server; genhub's default storage is that bucket for this test."""
    bucket = f"genhub-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_server, region_name=REGION)
    client.create_bucket(Bucket=bucket)
    env = {"GENHUB_STORAGE": "s3", "AWS_STORAGE_BUCKET_NAME": bucket, "AWS_S3_ENDPOINT_URL": s3_server,
           "AWS_S3_REGION_NAME": REGION, "AWS_S3_ADDRESSING_STYLE": "path", **TEST_KEYS}
    settings.GENHUB_STORAGE = "s3"
    settings.AWS_STORAGE_BUCKET_NAME = bucket
    settings.STORAGES = {**settings.STORAGES, "default": genhub_storage.default_backend(
        kind="s3", bucket=bucket, endpoint_url=s3_server, region=REGION, addressing_style="path", location="",
        presign_seconds=settings.GENHUB_S3_PRESIGN_SECONDS)}
    return S3(s3_server, bucket, client, env)


@pytest.fixture
def web_server(settings, media_root, tmp_path):
    """Starts real gunicorn web servers on free 127.0.0.1 ports against the test database; stopped at teardown.

    `start(**env)` returns the server's base URL once it answers. Like `qcluster`, the server is another
    process: tests need `django_db(transaction=True)` for it to see their rows.
    """
    import signal

    from tests.conftest import subprocess_env

    servers = []

    def start(**extra_env) -> str:
        port = free_port()
        env = subprocess_env(settings, media_root, **extra_env)
        log = open(tmp_path / f"web-{len(servers)}.log", "w")
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "genhub.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2",
             "--timeout", "120"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=settings.BASE_DIR)
        servers.append((process, log))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{url}/accounts/login/", timeout=10)
                return url
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still loading
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start: {(tmp_path / log.name).read_text()[-2000:]}") \
                        from None
                time.sleep(0.1)

    yield start
    for process, log in servers:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
