"""With object storage every file genhub keeps is in the bucket (a real S3 server over HTTP), downloads are
owner-checked presigned redirects that S3 itself serves (Range included), ZIP exports stream from and to
the bucket, and a paid clip is in the bucket before its job succeeds — or kept until it can be."""

import io
import os
import subprocess
import sys
import zipfile
from urllib.parse import parse_qs, urlsplit

import av
import pytest
import requests
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from genhub import storage
from jobs import storage_health
from jobs.dispatch import provider_pump
from jobs.models import Job
from providers.simulators.media import make_image
from tests.jobs.factories import make_batch
from tests.storage.conftest import TEST_KEYS
from tests.web.helpers import finish_job

S = Job.Status
pytestmark = pytest.mark.django_db


def stored_under(root, folder) -> list:
    path = root / folder
    return sorted(p.name for p in path.rglob("*") if p.is_file()) if path.exists() else []


def pump_until(predicate, *, passes=300):
    import time

    for _ in range(passes):
        provider_pump(provider_name="fal")
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("the pump did not get there")


@pytest.fixture
def quick_pump(settings):
    settings.GENHUB_PUMP_SECONDS = 0
    settings.FAL_POLL_INTERVAL = 0.05
    settings.GENHUB_STORE_RETRY_SECONDS = 0


@pytest.fixture
def finished(s3, user):
    batch = make_batch(user, count=2)
    first, second = batch.jobs.all()
    return batch, finish_job(first), second


# --- where files go -----------------------------------------------------------------------------------


def test_uploaded_inputs_are_stored_in_the_bucket_and_not_on_the_local_disk(s3, api, media_root):
    images = [SimpleUploadedFile(f"still{i}.png", make_image(color=(i * 70, 20, 90))) for i in range(2)]
    response = api.post("/api/batches/", {"provider": "fal", "prompt": "a pan", "images": images},
                        format="multipart")

    assert response.status_code == 201, response.content
    names = [job.input_image.name for job in Job.objects.order_by("position")]
    assert s3.keys("inputs/") == sorted(names) and len(set(names)) == 2
    assert s3.get(names[0]) == make_image(color=(0, 20, 90))
    assert stored_under(media_root, "inputs") == []


def test_a_paid_clip_and_its_poster_are_in_the_bucket_before_the_job_succeeds(s3, user, fal_sim, quick_pump,
                                                                              media_root):
    job = make_batch(user).jobs.get()

    pump_until(lambda: Job.objects.get(pk=job.pk).status == S.SUCCEEDED)

    job.refresh_from_db()
    assert s3.keys("outputs/") == [job.output_video.name] and s3.keys("posters/") == [job.poster.name]
    head = s3.client.head_object(Bucket=s3.bucket, Key=job.output_video.name)
    with av.open(io.BytesIO(s3.get(job.output_video.name))) as container:
        assert sum(1 for _ in container.decode(video=0)) == 17
    assert head["ContentLength"] == len(s3.get(job.output_video.name))
    assert stored_under(media_root, "outputs") == [] and stored_under(media_root, "posters") == []


def kept_while_s3_is_unreachable(job, settings):
    """Runs the job until its paid clip is kept because the bucket cannot be reached; returns a function
    that makes the bucket reachable again."""
    pump_until(lambda: Job.objects.get(pk=job.pk).external_id != "")  # submitted (the input read from S3)
    reachable = settings.STORAGES
    settings.STORAGES = {**reachable, "default": {**reachable["default"], "OPTIONS": {
        **reachable["default"]["OPTIONS"], "endpoint_url": "http://127.0.0.1:9"}}}  # nothing listens there
    pump_until(lambda: Job.objects.get(pk=job.pk).status == S.STORING)

    def restore():
        settings.STORAGES = reachable
    return restore


def test_a_paid_clip_is_kept_while_the_bucket_is_unreachable_and_stored_later_without_generating_it_again(
        s3, user, fal_sim, quick_pump, settings):
    job = make_batch(user).jobs.get()
    restore = kept_while_s3_is_unreachable(job, settings)
    job.refresh_from_db()
    assert "Could not connect" in job.pending_result["error"] and job.output_video.name == ""
    assert s3.keys("outputs/") == [] and s3.keys("posters/") == []

    restore()
    pump_until(lambda: Job.objects.get(pk=job.pk).status == S.SUCCEEDED)
    job.refresh_from_db()
    assert s3.keys("outputs/") == [job.output_video.name]
    assert sum(fal_sim.submits.values()) == 1 and job.attempts == 1  # stored, not generated again


def test_a_clip_spooled_on_another_cluster_host_waits_for_that_host_instead_of_being_declared_lost(
        s3, user, fal_sim, quick_pump, settings, tmp_path):
    job = make_batch(user).jobs.get()
    restore = kept_while_s3_is_unreachable(job, settings)
    restore()
    pending = Job.objects.get(pk=job.pk).pending_result
    elsewhere = tmp_path / "render-2-spool.mp4"  # the spool is on the other host's disk, not readable here
    os.replace(pending["spool"], elsewhere)
    Job.objects.filter(pk=job.pk).update(pending_result={**pending, "host": "render-2", "source": ""})

    for _ in range(5):
        provider_pump(provider_name="fal")
    assert Job.objects.get(pk=job.pk).status == S.STORING  # not "result lost": it is on render-2

    os.replace(elsewhere, pending["spool"])  # render-2's own cluster (or a shared pending area) reads it
    pump_until(lambda: Job.objects.get(pk=job.pk).status == S.SUCCEEDED)
    assert sum(fal_sim.submits.values()) == 1


def test_holders_of_one_job_storing_at_once_never_share_a_key_so_a_losers_discard_keeps_the_winners_clip(s3):
    import threading

    from jobs import artifacts
    from providers.simulators.media import make_video

    video = make_video(make_image(), frames=17, fps=16, width=320, height=240)
    facts = artifacts.inspect_video(video)
    barrier, stored = threading.Barrier(6), []

    def holder():
        default_storage.exists("warm-up")  # this thread's S3 connection is made before the race, not in it
        barrier.wait()  # all look for a free name before any has written
        stored.append(artifacts.store_output(job_uuid="5f0c0a9e-0000-4000-8000-000000000001", video=video,
                                             facts=facts))

    threads = [threading.Thread(target=holder) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len({video_name for video_name, _ in stored}) == 6 and len({poster for _, poster in stored}) == 6
    winner, *losers = stored
    for names in losers:
        artifacts.discard(*names)
    assert s3.keys("outputs/") == [winner[0]] and s3.keys("posters/") == [winner[1]]
    assert s3.get(winner[0]) == video


def test_with_object_storage_local_free_space_does_not_hold_paid_work(s3, settings):
    settings.GENHUB_STORAGE_MIN_FREE_MB = 10**9  # more than any local disk has
    assert storage_health.storage_problem() is None

    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}
    assert "MB free" in storage_health.storage_problem()


def test_a_clip_is_read_from_the_bucket_in_chunks_not_whole(s3):
    name = default_storage.save("outputs/big.mp4", ContentFile(os.urandom(3 * 1024 * 1024 + 5)))

    chunks = list(storage.read_chunks(name, 1024 * 1024))

    assert [len(chunk) for chunk in chunks] == [1024 * 1024] * 3 + [5]
    assert b"".join(chunks) == s3.get(name)


# --- downloads ----------------------------------------------------------------------------------------


def test_the_owner_is_redirected_to_a_short_lived_presigned_url_that_names_the_file(s3, finished, api, settings):
    _batch, job, _ = finished
    settings.GENHUB_S3_PRESIGN_SECONDS = 120

    response = api.get(f"/api/jobs/{job.uuid}/video")

    assert response.status_code == 302 and response["Cache-Control"] == "private, no-store"
    location = response["Location"]
    query = parse_qs(urlsplit(location).query)
    assert location.startswith(f"{s3.url}/{s3.bucket}/{job.output_video.name}?")
    assert query["X-Amz-Expires"] == ["120"] and query["response-content-type"] == ["video/mp4"]
    fetched = requests.get(location, timeout=10)
    assert fetched.status_code == 200 and fetched.content == s3.get(job.output_video.name)
    assert fetched.headers["Content-Type"] == "video/mp4"
    assert fetched.headers["Content-Disposition"] == f'inline; filename="img0-{job.seed}.mp4"'
    assert TEST_KEYS["AWS_SECRET_ACCESS_KEY"] not in location


def test_presigned_urls_name_the_public_endpoint_when_clients_reach_the_store_at_another_address(
        s3, finished, api, settings):
    _batch, job, _ = finished
    public = s3.url.replace("127.0.0.1", "localhost")  # the same server under the name clients use
    settings.GENHUB_S3_PUBLIC_ENDPOINT_URL = public

    location = api.get(f"/api/jobs/{job.uuid}/video")["Location"]

    assert location.startswith(f"{public}/{s3.bucket}/{job.output_video.name}?") and "X-Amz-Signature" in location
    fetched = requests.get(location, timeout=10)
    assert fetched.content == s3.get(job.output_video.name)
    assert fetched.headers["Content-Disposition"] == f'inline; filename="img0-{job.seed}.mp4"'


def test_range_requests_are_served_by_s3_through_the_presigned_url(s3, finished, api):
    _batch, job, _ = finished
    location = api.get(f"/api/jobs/{job.uuid}/poster")["Location"]
    whole = s3.get(job.poster.name)

    part = requests.get(location, headers={"Range": "bytes=10-29"}, timeout=10)

    assert part.status_code == 206 and part.content == whole[10:30]
    assert part.headers["Content-Range"] == f"bytes 10-29/{len(whole)}"
    assert requests.get(location, headers={"Range": f"bytes={len(whole) + 10}-"}, timeout=10).status_code == 416


def test_another_user_gets_404_and_no_url_for_any_stored_file(s3, finished, other_user):
    batch, job, _ = finished
    stranger = APIClient()
    stranger.force_login(other_user)

    for url in (f"/api/jobs/{job.uuid}/video", f"/api/jobs/{job.uuid}/poster", f"/jobs/{job.uuid}/input",
                f"/batches/{batch.uuid}/download.zip"):
        response = stranger.get(url)
        assert response.status_code == 404, url
        assert "Location" not in response and s3.bucket not in response.content.decode()


def test_an_anonymous_request_gets_no_url(s3, finished):
    _batch, job, _ = finished
    response = APIClient().get(f"/api/jobs/{job.uuid}/video")
    assert response.status_code in (401, 403) and "Location" not in response


def test_the_input_image_is_a_presigned_redirect_for_its_owner(s3, finished, client, user):
    _batch, job, _ = finished
    client.force_login(user)
    response = client.get(f"/jobs/{job.uuid}/input")
    assert response.status_code == 302
    assert requests.get(response["Location"], timeout=10).content == s3.get(job.input_image.name)


# --- ZIP exports ----------------------------------------------------------------------------------------


def test_a_batch_zip_streams_from_the_bucket_is_kept_there_and_later_served_by_a_presigned_redirect(
        s3, finished, client, user):
    batch, job, _ = finished
    client.force_login(user)

    first = client.get(f"/batches/{batch.uuid}/download.zip")
    assert first.status_code == 200 and first.streaming
    streamed = b"".join(first.streaming_content)
    with zipfile.ZipFile(io.BytesIO(streamed)) as archive:
        videos = [name for name in archive.namelist() if name.startswith("videos/")]
        assert len(videos) == 1 and archive.read(videos[0]) == s3.get(job.output_video.name)
    (kept,) = s3.keys(f"exports/{batch.uuid}/")
    assert s3.get(kept) == streamed
    assert s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []

    second = client.get(f"/batches/{batch.uuid}/download.zip")
    assert second.status_code == 302
    resumed = requests.get(second["Location"], headers={"Range": "bytes=100-"}, timeout=10)
    assert resumed.status_code == 206 and resumed.content == streamed[100:]
    assert 'attachment; filename="' in resumed.headers["Content-Disposition"]


def test_an_abandoned_zip_download_leaves_no_object_and_no_open_multipart_upload(s3, user, client):
    batch = make_batch(user, count=3)
    for job in batch.jobs.all():
        finish_job(job)
    client.force_login(user)

    response = client.get(f"/batches/{batch.uuid}/download.zip")
    stream = iter(response.streaming_content)
    next(stream)  # the client reads the start, then goes away
    response.close()

    assert s3.keys("exports/") == []
    assert s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []


def test_a_new_export_replaces_the_old_one_in_the_bucket(s3, finished, client, user):
    batch, _job, second = finished
    client.force_login(user)
    b"".join(client.get(f"/batches/{batch.uuid}/download.zip").streaming_content)
    (old,) = s3.keys(f"exports/{batch.uuid}/")

    finish_job(second)
    b"".join(client.get(f"/batches/{batch.uuid}/download.zip").streaming_content)

    (new,) = s3.keys(f"exports/{batch.uuid}/")
    assert new != old


# --- settings -------------------------------------------------------------------------------------------


def _settings_process(extra_env: dict, code: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "GENHUB_STORAGE"))}
    env.update({"DJANGO_SETTINGS_MODULE": "genhub.settings", "SECRET_KEY": "x" * 50, **extra_env})
    return subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"], env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_bucket_name_selects_s3_and_the_keys_are_nowhere_in_the_settings():
    secret = "wJalrXUtnFEMI-very-secret-value"
    result = _settings_process(
        {"AWS_STORAGE_BUCKET_NAME": "studio-media", "AWS_SECRET_ACCESS_KEY": secret, "AWS_ACCESS_KEY_ID": "AKIDX"},
        "from django.conf import settings; from genhub import storage; "
        "print(settings.GENHUB_STORAGE, storage.is_object_storage()); "
        "print({name: getattr(settings, name) for name in dir(settings) if name.isupper()})")
    assert result.returncode == 0, result.stderr
    first, everything = result.stdout.split("\n", 1)
    assert first == "s3 True"
    assert secret not in everything and "AKIDX" not in everything


def test_local_disk_is_the_default_and_s3_without_a_bucket_is_refused_clearly():
    local = _settings_process({}, "from genhub import storage; print(storage.is_object_storage())")
    assert local.returncode == 0 and local.stdout.strip() == "False", local.stderr
    refused = _settings_process({"GENHUB_STORAGE": "s3"}, "pass")
    assert refused.returncode != 0 and "GENHUB_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME" in refused.stderr
