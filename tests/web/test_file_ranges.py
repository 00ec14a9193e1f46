"""Videos, posters, input images and ZIP exports answer byte ranges (seeking, resuming), HEAD, and, in
production, hand the bytes to nginx — always after the owner check."""

import io
import zipfile

import pytest
from rest_framework.test import APIClient

from jobs import exports
from jobs.file_responses import ByteRange, Unsatisfiable, parse_range
from tests.jobs.factories import make_batch
from tests.web.helpers import finish_job

pytestmark = pytest.mark.django_db


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.fixture
def finished(user):
    batch = make_batch(user, count=2)
    first, second = batch.jobs.all()
    return batch, finish_job(first), second


def stored_bytes(field) -> bytes:
    with field.open("rb") as stored:
        return stored.read()


# --- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("header", "expected"), [
    ("bytes=0-99", ByteRange(0, 99)),
    ("bytes=100-", ByteRange(100, 999)),           # open: to the end
    ("bytes=-50", ByteRange(950, 999)),            # suffix: the last 50
    ("bytes=-5000", ByteRange(0, 999)),            # a suffix longer than the file is all of it
    ("bytes=900-5000", ByteRange(900, 999)),       # an end past the file is cut to it
    ("BYTES = 1 - 2", ByteRange(1, 2)),
])
def test_a_single_range_is_read_as_rfc_9110_says(header, expected):
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["", "bytes=", "bytes=5-2", "items=0-1", "bytes=0-1,5-6", "bytes=a-b"])
def test_a_malformed_or_multi_range_header_means_the_whole_file(header):
    assert parse_range(header, 1000) is None


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_a_range_outside_the_file_is_unsatisfiable(header):
    with pytest.raises(Unsatisfiable):
        parse_range(header, 1000)


# --- the video, the poster and the input image -----------------------------------------------------


def test_a_video_range_request_gets_exactly_those_bytes_with_206(api, finished):
    _, job, _ = finished
    whole = stored_bytes(job.output_video)

    response = api.get(f"/api/jobs/{job.uuid}/video", HTTP_RANGE="bytes=0-99")

    assert response.status_code == 206
    assert response["Accept-Ranges"] == "bytes"
    assert response["Content-Range"] == f"bytes 0-99/{len(whole)}"
    assert response["Content-Length"] == "100" and response["Content-Type"] == "video/mp4"
    assert body(response) == whole[:100]


def test_open_and_suffix_ranges_reach_the_end_of_the_video(api, finished):
    _, job, _ = finished
    whole = stored_bytes(job.output_video)
    url = f"/api/jobs/{job.uuid}/video"

    tail = api.get(url, HTTP_RANGE=f"bytes={len(whole) - 10}-")
    last = api.get(url, HTTP_RANGE="bytes=-25")

    assert tail.status_code == 206 and body(tail) == whole[-10:]
    assert tail["Content-Range"] == f"bytes {len(whole) - 10}-{len(whole) - 1}/{len(whole)}"
    assert last.status_code == 206 and body(last) == whole[-25:]


def test_a_range_past_the_end_of_the_video_is_416_with_its_size(api, finished):
    _, job, _ = finished
    size = job.output_video.size

    response = api.get(f"/api/jobs/{job.uuid}/video", HTTP_RANGE=f"bytes={size}-")

    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{size}"


def test_without_a_range_the_whole_video_says_it_accepts_ranges(api, finished):
    _, job, _ = finished

    response = api.get(f"/api/jobs/{job.uuid}/video")

    assert response.status_code == 200 and response["Accept-Ranges"] == "bytes"
    assert body(response) == stored_bytes(job.output_video)
    assert response["Content-Length"] == str(job.output_video.size)
    assert response["Content-Disposition"] == f'inline; filename="img0-{job.seed}.mp4"'


def test_head_gives_the_videos_headers_and_no_body(api, finished):
    _, job, _ = finished

    response = api.head(f"/api/jobs/{job.uuid}/video")

    assert response.status_code == 200
    assert response["Content-Length"] == str(job.output_video.size) and response["Accept-Ranges"] == "bytes"
    assert body(response) == b""


def test_a_resume_against_a_changed_file_gets_the_whole_file_not_a_splice(api, finished):
    _, job, _ = finished
    url = f"/api/jobs/{job.uuid}/video"
    tag = api.get(url)["ETag"]

    same = api.get(url, HTTP_RANGE="bytes=10-19", HTTP_IF_RANGE=tag)
    other = api.get(url, HTTP_RANGE="bytes=10-19", HTTP_IF_RANGE='"not-this-file"')

    assert same.status_code == 206 and body(same) == stored_bytes(job.output_video)[10:20]
    assert other.status_code == 200 and body(other) == stored_bytes(job.output_video)


def test_the_poster_and_the_input_image_answer_ranges_too(api, web, finished):
    _, job, _ = finished

    poster = api.get(f"/api/jobs/{job.uuid}/poster", HTTP_RANGE="bytes=0-1")
    image = web.get(f"/jobs/{job.uuid}/input", HTTP_RANGE="bytes=1-3")

    assert poster.status_code == 206 and body(poster) == b"\xff\xd8"  # a JPEG's first two bytes
    assert image.status_code == 206 and body(image) == b"PNG"


def test_a_range_never_opens_another_users_video(other_user, finished):
    _, job, _ = finished
    intruder = APIClient()
    intruder.force_login(other_user)

    for method in (intruder.get, intruder.head):
        response = method(f"/api/jobs/{job.uuid}/video", HTTP_RANGE="bytes=0-99")
        assert response.status_code == 404 and "Content-Range" not in response


# --- the ZIP export -------------------------------------------------------------------------------


def test_an_interrupted_zip_download_resumes_from_where_it_stopped(web, finished):
    batch, _, _ = finished
    url = f"/batches/{batch.uuid}/download.zip"
    first = web.get(url)  # streamed at once, a copy kept as it goes
    data = body(first)

    rest = web.get(url, HTTP_RANGE=f"bytes={len(data) // 2}-")
    again = web.get(url)

    assert first.status_code == 200 and first["Content-Type"] == "application/zip"
    assert rest.status_code == 206 and rest["Content-Range"] == f"bytes {len(data) // 2}-{len(data) - 1}/{len(data)}"
    assert data[:len(data) // 2] + body(rest) == data
    assert zipfile.ZipFile(io.BytesIO(data)).testzip() is None
    assert again["Accept-Ranges"] == "bytes" and again["Content-Length"] == str(len(data)) and body(again) == data
    assert web.head(url)["Content-Length"] == str(len(data))


def test_a_resume_of_a_zip_never_kept_builds_it_first(web, finished):
    batch, _, _ = finished
    url = f"/batches/{batch.uuid}/download.zip"

    tail = web.get(url, HTTP_RANGE="bytes=-22")  # a ZIP's end-of-central-directory record

    assert tail.status_code == 206 and body(tail).startswith(b"PK\x05\x06")


def test_an_abandoned_first_download_leaves_no_file_behind(web, finished, media_root):
    batch, _, _ = finished
    # What the view streams; the server closes it (StreamingHttpResponse.close) when the client goes away.
    stream = exports.batch_zip_kept_stream(batch, list(batch.jobs.order_by("position")))
    next(stream)

    stream.close()

    assert not [path for path in (media_root / "exports").rglob("*") if path.is_file()]
    assert body(web.get(f"/batches/{batch.uuid}/download.zip", HTTP_RANGE="bytes=0-3")) == b"PK\x03\x04"


def test_the_zip_is_a_new_file_once_another_job_finishes(web, finished, media_root):
    batch, _, second = finished
    url = f"/batches/{batch.uuid}/download.zip"
    body(web.get(url))
    before = web.head(url)

    again = web.head(url)
    finish_job(second)
    after = web.get(url, HTTP_RANGE="bytes=0-")

    assert again["ETag"] == before["ETag"]  # built once, served the same
    assert after["ETag"] != before["ETag"]
    assert len(zipfile.ZipFile(io.BytesIO(body(after))).namelist()) == 3  # manifest and two videos
    kept = [path.name for path in (media_root / "exports" / str(batch.uuid)).iterdir()]
    assert len(kept) == 1 and kept[0].endswith(".zip"), f"the old export or a partial file is left: {kept}"


# --- production: nginx sends the bytes --------------------------------------------------------------


def test_with_an_accel_prefix_genhub_checks_the_owner_and_nginx_sends_the_file(api, web, other_user, finished,
                                                                               settings):
    settings.GENHUB_ACCEL_REDIRECT_PREFIX = "/protected-media/"
    batch, job, _ = finished

    video = api.get(f"/api/jobs/{job.uuid}/video", HTTP_RANGE="bytes=0-99")
    export = web.get(f"/batches/{batch.uuid}/download.zip")
    intruder = APIClient()
    intruder.force_login(other_user)

    assert video.status_code == 200 and body(video) == b""
    assert video["X-Accel-Redirect"] == f"/protected-media/{job.output_video.name}"
    assert video["Content-Type"] == "video/mp4" and "Content-Range" not in video
    assert export["X-Accel-Redirect"].startswith(f"/protected-media/exports/{batch.uuid}/")
    assert export["Content-Disposition"].startswith("attachment;") and body(export) == b""
    assert intruder.get(f"/api/jobs/{job.uuid}/video").status_code == 404
