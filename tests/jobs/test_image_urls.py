"""Items by `image_url` (issue 13, item 3): through the real API, fetched from a real local HTTP server (and
S3 in moto's server mode) by the background fetcher, with the upload checks and the download address rule."""

import hashlib
import io
import socket

import av
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs import fetching
from jobs.models import BatchRun, Job
from providers import addresses
from providers.simulators.media import make_image
from tests.conftest import wait_for
from tests.jobs.image_server import ImageServer

S = Job.Status


@pytest.fixture
def images():
    server = ImageServer()
    yield server
    server.stop()


def post_items(api, items, **fields):
    return api.post("/api/batches/", {"provider": "fal", "prompt": "a slow pan", **fields, "items": items},
                    format="json")


def jobs_by_name(batch_id) -> dict[str, Job]:
    return {job.input_name: job for job in Job.objects.filter(batch__uuid=batch_id)}


def fetch_all():
    """The fetcher's loop, in this process (without its lease), until no job waits for its image."""
    fetching.fetch_waiting()


# --- fetched, checked and stored like uploads ------------------------------------------------------

def test_items_by_url_wait_in_fetching_then_are_stored_like_uploads(api, images, png):
    url = f"{images.url}/still.png"
    response = post_items(api, [{"image_url": url, "prompt": "pan left"}, {"image_url": url, "seed": 5},
                                {"image_url": f"{images.url}/other.png?sig=secret-token"}])
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "fetching" and [job["status"] for job in body["jobs"]] == ["fetching"] * 3
    assert body["jobs"][2]["image_url"] == f"{images.url}/other.png"  # the query (a signature) is never shown
    assert images.hits == {}  # nothing is fetched in the request

    fetch_all()
    jobs = list(Job.objects.order_by("position"))
    assert [job.status for job in jobs] == [S.QUEUED] * 3
    assert images.hits == {"/still.png": 1, "/other.png": 1}  # one fetch per distinct URL
    served = images.files["/still.png"]
    sha = hashlib.sha256(served).hexdigest()
    assert jobs[0].input_sha256 == jobs[1].input_sha256 == sha
    assert jobs[0].input_image.name == f"inputs/{sha[:2]}/{sha}.png"
    assert default_storage.open(jobs[0].input_image.name).read() == served
    assert (jobs[0].params["width"], jobs[0].params["height"]) == (640, 480)  # the 320×240 still's aspect
    assert [job.input_name for job in jobs] == ["still.png", "still.png", "other.png"]

    # An upload of the same picture is the same stored file (dedup by sha256, as between uploads).
    upload = api.post("/api/batches/", {"provider": "fal", "prompt": "p", "images": [
        SimpleUploadedFile("again.png", served)]}, format="multipart")
    assert Job.objects.get(batch__uuid=upload.json()["id"]).input_image.name == jobs[0].input_image.name


def test_an_image_that_cannot_be_had_fails_its_item_with_the_reason_and_the_batch_goes_on(api, images, settings):
    settings.GENHUB_MAX_IMAGE_BYTES = 300_000
    settings.GENHUB_IMAGE_FETCH_TIMEOUT_SECONDS = 0.5
    settings.HTTP_MAX_TRIES = 1
    names = ["still.png", "missing", "page.html", "huge", "huge-declared", "slow", "trickle"]
    response = post_items(api, [{"image_url": f"{images.url}/{name}"} for name in names])
    assert response.status_code == 201, response.content

    fetch_all()
    jobs = jobs_by_name(response.json()["id"])
    assert jobs["still.png"].status == S.QUEUED
    failed = {name: jobs[name] for name in names[1:]}
    assert {job.status for job in failed.values()} == {S.FAILED}
    assert {job.error_code for job in failed.values()} == {"image_unavailable"}
    reasons = {name: job.error_message for name, job in failed.items()}
    assert "HTTP 404" in reasons["missing"]
    assert "not an image" in reasons["page.html"]
    assert "larger than the 300000-byte limit (GENHUB_MAX_IMAGE_BYTES)" in reasons["huge"]
    assert "announces 1000000000000 bytes" in reasons["huge-declared"]
    assert "timed out after 0.5s" in reasons["slow"]
    assert "timed out after 0.5s" in reasons["trickle"]  # every byte in time, the whole far too late
    assert all(job.finished_at for job in failed.values())
    # The batch is not failed: its good item goes on to the provider.
    batch = api.get(f"/api/batches/{response.json()['id']}/").json()
    assert batch["status"] == "running" and batch["counts"]["failed"] == 6 and batch["counts"]["queued"] == 1
    error = next(job["error"] for job in batch["jobs"] if job["input_name"] == "missing")
    assert error["code"] == "image_unavailable" and "HTTP 404" in error["message"]


def test_a_slow_image_server_holds_one_fetch_thread_not_the_others(api, images, settings):
    """Two threads, one URL that answers only after the twelve others were served: the other thread must
    fetch all twelve meanwhile. A fetcher that took a few URLs and waited for all of them before taking
    more would never get to the last ones, and the slow one would time out."""
    settings.GENHUB_IMAGE_FETCH_CONCURRENCY = 2
    settings.GENHUB_IMAGE_FETCH_TIMEOUT_SECONDS = 60
    images.files.update({f"/quick{i}.png": make_image(color=(i * 20, 10, 10)) for i in range(12)})
    images.release_after = 12
    urls = [f"{images.url}/slow"] + [f"{images.url}/quick{i}.png" for i in range(12)]
    response = post_items(api, [{"image_url": url} for url in urls])
    fetch_all()
    jobs = jobs_by_name(response.json()["id"])
    assert {name: job.status for name, job in jobs.items()} == dict.fromkeys(jobs, S.QUEUED)
    assert images.hits["/slow"] == 1


def test_a_retried_item_whose_image_was_unavailable_is_fetched_again(api, images):
    response = post_items(api, [{"image_url": f"{images.url}/later.png"}])
    fetch_all()
    job = Job.objects.get()
    assert job.status == S.FAILED and "HTTP 404" in job.error_message
    images.files["/later.png"] = make_image(color=(1, 2, 3))  # now it is there

    retried = api.post(f"/api/jobs/{job.uuid}/retry/")
    assert retried.status_code == 200 and retried.json()["status"] == "fetching"
    fetch_all()
    job.refresh_from_db()
    assert job.status == S.QUEUED and job.input_sha256 == hashlib.sha256(images.files["/later.png"]).hexdigest()
    assert response.status_code == 201


def test_a_cancelled_batch_keeps_its_items_cancelled_when_their_image_arrives(api, images):
    response = post_items(api, [{"image_url": f"{images.url}/still.png"}])
    assert api.post(f"/api/batches/{response.json()['id']}/cancel/").json() == {"changed": 1}
    fetch_all()
    assert Job.objects.get().status == S.CANCELLED
    assert images.hits == {}  # nothing waits in `fetching`: nothing is fetched


def test_csv_rows_may_name_their_image_by_url_beside_uploaded_files(api, images, png):
    rows = ("file,image_url,prompt\n"
            f"local.png,,the upload turns\n"
            f",{images.url}/still.png,the fetched one turns\n")
    response = api.post("/api/batches/", {"provider": "fal", "items": rows,
                                          "images": [SimpleUploadedFile("local.png", png)]}, format="multipart")
    assert response.status_code == 201, response.content
    jobs = jobs_by_name(response.json()["id"])
    assert jobs["local.png"].status == S.QUEUED and jobs["still.png"].status == S.FETCHING
    assert jobs["still.png"].prompt == "the fetched one turns"
    fetch_all()
    assert Job.objects.get(pk=jobs["still.png"].pk).status == S.QUEUED


# --- refused at intake: 400, nothing stored -------------------------------------------------------

@pytest.mark.parametrize(("url", "says"), [
    ("ftp://example.com/a.png", "scheme 'ftp' refused"),
    ("file:///etc/passwd", "scheme 'file' refused"),
    ("https://user:pw@example.com/a.png", "credentials are refused"),
    ("https://10.0.0.7/a.png", "private or link-local"),
    ("https://169.254.169.254/latest/meta-data", "private or link-local"),
    ("s3://someone-elses-bucket/a.png", "s3:// URLs need a configured bucket"),
    ("https://example.com/" + "a" * 2100, "longer than 2048"),
    ("https://example.com/a b.png", "must not contain spaces"),
    ("https://example.com/a\tb.png", "control characters"),
])
def test_an_image_url_genhub_must_not_fetch_is_refused_with_400_and_nothing_is_created(api, settings, url, says):
    settings.GENHUB_ALLOW_PRIVATE_DOWNLOADS = False
    response = post_items(api, [{"image_url": "https://example.com/fine.png"}, {"image_url": url}])
    assert response.status_code == 400, response.content
    assert any(says in error["message"] and error["field"] == "items" for error in response.json()["errors"]), \
        response.json()
    assert not BatchRun.objects.exists() and not Job.objects.exists()


def test_plain_http_image_urls_need_the_development_setting(api, settings):
    settings.GENHUB_IMAGE_URL_ALLOW_HTTP = False
    response = post_items(api, [{"image_url": "http://example.com/a.png"}])
    assert response.status_code == 400
    assert "scheme 'http' refused; only https" in response.json()["errors"][0]["message"]


def test_a_row_with_both_a_file_and_an_image_url_is_refused(api, png):
    response = api.post("/api/batches/", {"provider": "fal", "prompt": "p", "images": [
        SimpleUploadedFile("a.png", png)], "items": '[{"file": "a.png", "image_url": "https://example.com/a.png"}]'},
        format="multipart")
    assert response.status_code == 400
    assert any("not both" in error["message"] for error in response.json()["errors"])


# --- redirects: every hop is held to the address rule ---------------------------------------------

@pytest.fixture
def public_stand_in(monkeypatch):
    """A server on 127.0.0.2 standing in for a host on the internet (none can be reached from here): only
    that address counts as public, so everything else of the rule (127.0.0.1, localhost, 10/8, …) holds."""
    real = addresses.is_public
    monkeypatch.setattr(addresses, "is_public", lambda ip: ip == "127.0.0.2" or real(ip))
    server = ImageServer(host="127.0.0.2")
    yield server
    server.stop()


def test_a_redirect_to_a_private_address_is_refused_when_private_addresses_are_not_allowed(
        api, settings, images, public_stand_in):
    settings.GENHUB_ALLOW_PRIVATE_DOWNLOADS = False
    public_stand_in.redirects.update({
        "loopback": f"{images.url}/still.png",  # an IP literal: refused before any connection
        "by-name": f"http://localhost:{images.port}/still.png",  # a name: refused on the peer it reached
        "metadata": "http://169.254.169.254/latest/meta-data/",
        "same-host": "/other.png",  # a relative redirect on the allowed host is followed
    })
    hops = ["loopback", "by-name", "metadata", "same-host"]
    response = post_items(api, [{"image_url": f"{public_stand_in.url}/to/{hop}"} for hop in hops])
    assert response.status_code == 201, response.content

    fetch_all()
    jobs = jobs_by_name(response.json()["id"])
    assert jobs["same-host"].status == S.QUEUED
    assert jobs["same-host"].input_sha256 == hashlib.sha256(public_stand_in.files["/other.png"]).hexdigest()
    for hop in ("loopback", "by-name", "metadata"):
        assert jobs[hop].status == S.FAILED and jobs[hop].error_code == "image_unavailable"
        assert "loopback, private or link-local" in jobs[hop].error_message
        assert "redirected to" in jobs[hop].error_message
    # The private server never got a request: the literals were refused before connecting, the name on the
    # peer its socket reached, before a byte was sent.
    assert images.hits == {} and images.connections <= 1


def test_redirects_are_followed_only_so_far(api, settings, images):
    settings.GENHUB_IMAGE_FETCH_MAX_REDIRECTS = 2
    images.redirects.update({"a": "/to/b", "b": "/to/c", "c": "/still.png"})
    response = post_items(api, [{"image_url": f"{images.url}/to/a"}, {"image_url": f"{images.url}/to/b"}])
    fetch_all()
    jobs = jobs_by_name(response.json()["id"])
    assert jobs["a"].status == S.FAILED and "more than 2 redirects" in jobs["a"].error_message
    assert jobs["b"].status == S.QUEUED


# --- s3:// against moto's server mode ------------------------------------------------------------

@pytest.fixture
def s3(settings, monkeypatch):
    """A real S3 HTTP server (moto's server mode) on a free local port, with the configured bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    settings.AWS_S3_ENDPOINT_URL = f"http://127.0.0.1:{port}"
    settings.AWS_STORAGE_BUCKET_NAME = "genhub-stills"
    settings.AWS_S3_REGION_NAME = "us-east-1"
    # The keys are never settings: boto3 takes them from the environment, as in production.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    client = boto3.client("s3", endpoint_url=settings.AWS_S3_ENDPOINT_URL, region_name="us-east-1",
                          aws_access_key_id="testing-key", aws_secret_access_key="testing-secret")
    client.create_bucket(Bucket="genhub-stills")
    yield client
    server.stop()


def test_s3_items_are_read_from_the_configured_bucket(api, s3, settings):
    settings.GENHUB_MAX_IMAGE_BYTES = 300_000
    still = make_image(color=(90, 90, 200), fmt="JPEG")
    s3.put_object(Bucket="genhub-stills", Key="shots/still one.jpg", Body=still)
    s3.put_object(Bucket="genhub-stills", Key="shots/huge.png", Body=b"\x89PNG" + b"\0" * 400_000)
    s3.put_object(Bucket="genhub-stills", Key="shots/notes.txt", Body=b"not a picture")
    keys = ["still one.jpg", "missing.png", "huge.png", "notes.txt"]
    response = post_items(api, [{"image_url": f"s3://genhub-stills/shots/{key}"} for key in keys])
    assert response.status_code == 201, response.content

    fetch_all()
    jobs = jobs_by_name(response.json()["id"])
    assert jobs["still one.jpg"].status == S.QUEUED
    assert jobs["still one.jpg"].input_image.name.endswith(f"{hashlib.sha256(still).hexdigest()}.jpg")
    assert "HTTP 404 (NoSuchKey)" in jobs["missing.png"].error_message
    assert "too large" in jobs["huge.png"].error_message
    assert "not an image" in jobs["notes.txt"].error_message
    assert {jobs[key].error_code for key in keys[1:]} == {"image_unavailable"}


def test_an_s3_url_of_another_bucket_is_refused_at_intake(api, s3):
    response = post_items(api, [{"image_url": "s3://other-bucket/a.png"}])
    assert response.status_code == 400
    assert "must name the bucket genhub-stills" in response.json()["errors"][0]["message"]


# --- end to end on a real cluster ------------------------------------------------------------------

@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
def test_a_batch_of_url_items_finishes_on_fal_and_the_bad_one_fails_with_its_reason(api, fal_sim, qcluster,
                                                                                     images):
    images.files.update({f"/shot{i}.png": make_image(color=(i * 50, 100, 30)) for i in range(3)})
    items = [{"image_url": f"{images.url}/shot{i}.png"} for i in range(3)] + [{"image_url": f"{images.url}/missing"}]
    response = post_items(api, items, params={"num_frames": 17})
    assert response.status_code == 201, response.content
    batch_id = response.json()["id"]

    qcluster(FAL_POLL_INTERVAL="0.2")
    wait_for(lambda: not Job.objects.filter(status__in=Job.UNFINISHED).exists(), timeout=120,
             message="every item to finish")
    jobs = jobs_by_name(batch_id)
    assert [jobs[f"shot{i}.png"].status for i in range(3)] == [S.SUCCEEDED] * 3
    assert jobs["missing"].status == S.FAILED and jobs["missing"].error_code == "image_unavailable"
    assert "HTTP 404" in jobs["missing"].error_message
    batch = api.get(f"/api/batches/{batch_id}/").json()
    assert batch["status"] == "completed_with_failures"
    video = api.get(f"/api/jobs/{jobs['shot0.png'].uuid}/video")
    with av.open(io.BytesIO(b"".join(video.streaming_content))) as container:
        assert sum(1 for _ in container.decode(video=0)) == 17
    assert sum(fal_sim.submits.values()) == 3  # the item without an image was never sent, never paid


def test_the_batch_page_shows_an_item_whose_image_is_still_being_fetched(api, client, user, images):
    response = post_items(api, [{"image_url": f"{images.url}/still.png"}])
    job = Job.objects.get()
    client.force_login(user)
    page = client.get(f"/batches/{response.json()['id']}/")
    assert page.status_code == 200 and "Fetching the image…" in page.content.decode()
    assert client.get(f"/jobs/{job.uuid}/input").status_code == 404  # nothing to show yet, not an error
    fetch_all()
    assert client.get(f"/jobs/{job.uuid}/input").status_code == 200


def test_an_image_urls_query_string_is_never_shown_in_the_api_errors_or_the_admin(api, admin_client, images):
    response = post_items(api, [{"image_url": f"{images.url}/missing?X-Amz-Signature=owner-secret"}])
    fetch_all()
    job = Job.objects.get()
    assert job.status == S.FAILED and "owner-secret" not in job.error_message
    assert "owner-secret" not in api.get(f"/api/batches/{response.json()['id']}/").content.decode()
    page = admin_client.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()
    assert f"{images.url}/missing" in page and "owner-secret" not in page


def test_the_minute_schedule_and_a_cluster_restart_start_a_fetcher_for_items_left_waiting(api, images):
    """A cluster killed mid-fetch leaves its items in `fetching`: the safety nets must start a fetcher."""
    from django_q.models import OrmQ

    from jobs import tasks
    from jobs.resume import cluster_resume

    def fetchers() -> int:
        return sum(1 for row in OrmQ.objects.all() if row.func() == "jobs.tasks.fetch_images")

    post_items(api, [{"image_url": f"{images.url}/still.png"}])
    OrmQ.objects.all().delete()  # the fetcher enqueued at creation was lost with its cluster
    tasks.pump_all()
    assert fetchers() == 1
    assert "fetch" in cluster_resume() and fetchers() == 2
    fetch_all()
    OrmQ.objects.all().delete()
    tasks.pump_all()
    assert fetchers() == 0  # nothing waits: no fetcher
