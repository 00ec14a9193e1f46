"""The web pages through Django's test client: each page, each action, and each form error shown
where it belongs."""

import csv
import io
import re
import zipfile
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from gpu_instances.models import GpuInstance, InstanceEvent
from jobs.costs import fal_cost
from jobs.models import BatchRun, Job
from tests.jobs.factories import make_batch
from tests.web.helpers import errors_next_to, finish_job, form_data, image_file, text_of, zip_bytes

pytestmark = pytest.mark.django_db
S = Job.Status
NEW = "/batches/new/"



def assert_nothing_created():
    assert BatchRun.objects.count() == 0 and Job.objects.count() == 0


# --- login and access ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", NEW, "/instance/", "/batches/00000000-0000-0000-0000-000000000000/"])
def test_every_page_asks_for_a_login_first(client, path):
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"].startswith(f"{reverse('login')}?next=")


def test_a_user_logs_in_with_the_login_form_and_lands_on_the_batches(client, user):
    response = client.post(reverse("login"), {"username": "alice", "password": "alice-password-1"})

    assert response.status_code == 302 and response["Location"] == "/"
    assert "Batches" in client.get("/").content.decode()


def test_a_wrong_password_is_reported_on_the_login_page(client, user):
    response = client.post(reverse("login"), {"username": "alice", "password": "nope"})

    assert response.status_code == 200
    assert "Please enter a correct username and password" in text_of(response.content.decode())


def test_logging_out_returns_to_the_login_page(web):
    response = web.post(reverse("logout"))

    assert response.status_code == 302 and response["Location"] == reverse("login")
    assert web.get("/").status_code == 302


@pytest.mark.parametrize("simulated", [True, False])
def test_the_simulated_cloud_banner_shows_exactly_when_simulators_are_in_use(web, settings, simulated):
    settings.GENHUB_SIMULATED = simulated

    for path in ("/", NEW, "/instance/"):
        assert ("Simulated cloud." in web.get(path).content.decode()) is simulated, path
    web.logout()
    assert ("Simulated cloud." in web.get(reverse("login")).content.decode()) is simulated


# --- batches list ----------------------------------------------------------------------------


def test_an_empty_list_invites_the_user_to_create_a_first_batch(web):
    page = web.get("/").content.decode()

    assert "No batches yet" in page and f'href="{NEW}"' in page


def test_the_list_shows_only_the_users_own_batches(web, user, other_user):
    make_batch(user, name="mine")
    make_batch(other_user, name="theirs")

    page = web.get("/").content.decode()

    assert "mine" in page and "theirs" not in page


def test_the_list_shows_provider_progress_counts_cost_and_created_time(web, user):
    batch = make_batch(user, name="orbit", count=4)
    jobs = list(batch.jobs.all())
    finish_job(jobs[0], cost="0.1000")
    finish_job(jobs[1], cost="0.0500")
    finish_job(jobs[2], status=S.FAILED)

    row = text_of(re.search(r"<tbody>(.*?)</tbody>", web.get("/").content.decode(), re.S).group(1))

    assert "orbit" in row and "fal.ai" in row
    assert "75%" in row  # three of four jobs are finished
    assert "2 succeeded" in row and "1 queued" in row and "1 failed" in row
    assert "$0.1500" in row
    assert batch.created_at.strftime("%Y-%m-%d") in row


def test_the_list_is_paginated_twenty_to_a_page(web, user):
    for number in range(21):
        make_batch(user, name=f"batch-{number:02}")

    first, second = web.get("/").content.decode(), web.get("/?page=2").content.decode()

    assert "batch-20" in first and "batch-01" in first and "batch-00" not in first
    assert "Page 1 of 2" in first and 'href="?page=2"' in first
    assert "batch-00" in second and "batch-20" not in second


# --- new batch: the form -------------------------------------------------------------------


def test_every_input_of_the_new_batch_form_has_a_label(web):
    page = web.get(NEW).content.decode()

    controls = re.findall(r'<(?:input|select|textarea)\b[^>]*\bid="([^"]+)"', page)
    labelled = set(re.findall(r'<label[^>]*\bfor="([^"]+)"', page))
    assert controls and set(controls) <= labelled, set(controls) - labelled
    assert "<legend>Provider</legend>" in page and "<legend>Wan 2.2 parameters</legend>" in page


def test_a_dry_run_shows_the_pairing_and_the_estimate_on_each_provider_and_creates_nothing(web, settings):
    settings.FAL_MAX_IN_FLIGHT = 2
    rows = "file,prompt,negative_prompt,seed\na.png,a cat turns its head,blurry,42\nb.png,,,\n"

    response = web.post(NEW, form_data(action="estimate", pairing="rows", rows_text=rows, provider="vastai",
                                       prompt="waves roll in"))

    assert response.status_code == 200
    page = response.content.decode()
    dry_run = text_of(re.search(r'<div id="dry-run" data-swap>(.*)</form>', page, re.S).group(1))
    assert "Dry run: 2 items from 2 images" in dry_run
    assert "1 a.png a cat turns its head blurry 42" in dry_run
    assert "2 b.png waves roll in — random" in dry_run
    fal = fal_cost({"num_frames": 17, "resolution": "480p"}) * 2
    assert re.search(rf'data-estimate-cost="fal">\${fal}<', page)
    assert re.search(r'data-estimate-cost="vastai">\$0.0500<', page)  # 2 × 60 s at $1.50/h
    assert "about 90 s" in dry_run and "about 2 min" in dry_run  # fal: 2 at once; vast: one after another
    assert "Create 2 jobs on vast.ai GPU" in dry_run
    assert_nothing_created()


def test_creating_a_batch_pairs_csv_rows_with_their_files_and_opens_the_batch(web, user):
    rows = SimpleUploadedFile("rows.csv", b"\xef\xbb\xbffile,prompt,seed\nb.png,a boat drifts,7\na.png,a cat,8\n")

    response = web.post(NEW, form_data(pairing="rows", rows_file=rows, name="harbour"))

    batch = BatchRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/batches/{batch.uuid}/"
    assert (batch.name, batch.provider, batch.owner) == ("harbour", "fal", user)
    assert [(job.input_name, job.prompt, job.seed) for job in batch.jobs.all()] == [
        ("b.png", "a boat drifts", 7), ("a.png", "a cat", 8)]
    assert "Batch created: 2 jobs on fal.ai." in web.get(response["Location"]).content.decode()


def test_the_page_script_gets_the_new_batch_address_instead_of_a_redirect(web):
    response = web.post(NEW, form_data(), headers={"X-Requested-With": "fetch"})

    assert response.status_code == 201
    assert response["Location"] == f"/batches/{BatchRun.objects.get().uuid}/"


def test_several_seeds_per_image_make_that_many_jobs_per_image(web):
    web.post(NEW, form_data(pairing="seeds", seeds_per_image="3", seed="100",
                            images=[image_file("a.png")]))

    assert [job.seed for job in Job.objects.all()] == [100, 101, 102]


def test_rows_and_seeds_count_only_in_their_own_pairing_mode(web):
    web.post(NEW, form_data(pairing="prompt", rows_text="file,prompt\na.png,ignored", seeds_per_image="5"))

    assert sorted(job.prompt for job in Job.objects.all()) == ["the camera slowly orbits"] * 2


def test_the_parameters_and_preset_reach_the_jobs(web):
    web.post(NEW, form_data(provider="vastai", preset="hd", num_frames="33", fps="24", steps="6", cfg="1.5",
                            negative_prompt="text, watermark", images=[image_file("a.png")]))

    job = Job.objects.get()
    assert job.provider == "vastai" and job.batch.preset == "hd"
    assert (job.params["num_frames"], job.params["fps"], job.params["resolution"]) == (33, 24, "720p")
    assert (job.params["steps"], job.params["cfg"], job.negative_prompt) == (6, 1.5, "text, watermark")


def test_a_zip_of_images_becomes_one_job_per_image(web):
    archive = zip_bytes({"shots/one.png": image_file().read(), "shots/two.png": image_file().read(),
                         "__MACOSX/shots/._one.png": b"junk", "shots/.DS_Store": b"junk"})

    web.post(NEW, form_data(images=[SimpleUploadedFile("shots.zip", archive, content_type="application/zip")]))

    assert [job.input_name for job in Job.objects.all()] == ["one.png", "two.png"]


# --- new batch: every error next to its field or item ----------------------------------------------


def test_it_shows_the_error_next_to_the_bad_file(web):
    bad = SimpleUploadedFile("notes.png", b"this is not a picture", content_type="image/png")

    response = web.post(NEW, form_data(images=[image_file("a.png"), bad]))

    assert response.status_code == 400
    assert errors_next_to(response, "images") == "notes.png : not an image (PNG, JPEG or WebP expected)"
    assert "The batch was not created: 1 problem" in text_of(response.content.decode())
    assert 'href="#field-images"' in response.content.decode()
    assert_nothing_created()


def test_it_shows_a_csv_row_for_a_missing_file_next_to_the_rows(web):
    response = web.post(NEW, form_data(pairing="rows", rows_text="file,prompt\nmissing.png,a dog\n"))

    assert response.status_code == 400
    assert "row 1 (missing.png): no uploaded image has this name" in errors_next_to(response, "rows")
    assert_nothing_created()


def test_it_shows_a_bad_csv_header_next_to_the_rows(web):
    response = web.post(NEW, form_data(pairing="rows", rows_text="name,prompt\na.png,a dog\n"))

    assert "CSV needs a header row" in errors_next_to(response, "rows")


def test_it_asks_for_rows_when_the_rows_mode_has_none(web):
    response = web.post(NEW, form_data(pairing="rows", rows_text="  "))

    assert "this pairing needs rows" in errors_next_to(response, "rows")
    assert_nothing_created()


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("num_frames", "50", "must be 4n+1"),
    ("num_frames", "lots", "must be an integer"),
    ("fps", "100", "must be between 4 and 60"),
    ("steps", "1", "must be between 2 and 40"),
    ("cfg", "11", "must be between 1.0 and 10.0"),
    ("seed", "-1", "must be between 0 and"),
    ("resolution", "8k", "must be one of 480p, 580p, 720p"),
])
def test_it_shows_a_parameter_out_of_range_next_to_that_parameter(web, field, value, fragment):
    response = web.post(NEW, form_data(**{field: value}))

    assert response.status_code == 400
    assert fragment in errors_next_to(response, field)
    assert 'aria-invalid="true"' in re.search(rf'<(?:input|select)[^>]*id="id_{field}"[^>]*>',
                                              response.content.decode()).group(0)
    assert_nothing_created()


def test_it_shows_a_missing_prompt_next_to_the_prompt_for_each_image(web):
    response = web.post(NEW, form_data(prompt=""))

    errors = errors_next_to(response, "prompt")
    assert "a.png : this image has no prompt" in errors and "b.png : this image has no prompt" in errors


def test_it_shows_an_unusable_seed_count_next_to_it(web):
    assert "must be an integer" in errors_next_to(web.post(NEW, form_data(pairing="seeds", seeds_per_image="x")),
                                                  "seeds_per_image")
    assert "between 1 and 16" in errors_next_to(web.post(NEW, form_data(pairing="seeds", seeds_per_image="40")),
                                                "seeds_per_image")


def test_it_asks_for_images_when_none_were_chosen(web):
    response = web.post(NEW, form_data(images=[]))

    assert "at least one image is required" in errors_next_to(response, "images")


def test_it_shows_an_unknown_provider_and_preset_next_to_them(web):
    response = web.post(NEW, form_data(provider="aws", preset="ultra"))

    assert "unknown provider 'aws'" in errors_next_to(response, "provider")
    assert "unknown preset 'ultra'" in errors_next_to(response, "preset")


def test_it_shows_an_unknown_pairing_mode_next_to_it(web):
    response = web.post(NEW, form_data(pairing="magic"))

    assert "Select a valid choice" in errors_next_to(response, "pairing")
    assert_nothing_created()


def test_it_shows_a_broken_zip_next_to_the_images(web):
    response = web.post(NEW, form_data(images=[SimpleUploadedFile("shots.zip", b"PK\x03\x04 broken")]))

    assert "shots.zip : not a readable ZIP archive" in errors_next_to(response, "images")


def test_it_lists_every_problem_at_once_and_keeps_what_was_typed(web):
    bad = SimpleUploadedFile("notes.png", b"nope")

    response = web.post(NEW, form_data(images=[bad], fps="100", name="keep me", prompt=""))

    page = response.content.decode()
    assert "The batch was not created: 3 problems" in text_of(page)
    assert 'value="keep me"' in page and 'value="100"' in page


# --- batch page --------------------------------------------------------------------------------


def test_the_batch_page_shows_a_card_per_job_with_status_attempts_error_and_cost(web, user):
    batch = make_batch(user, name="orbit", count=3)
    done, failed, waiting = batch.jobs.all()
    finish_job(done, cost="0.0340")
    finish_job(failed, status=S.FAILED, error="SwarmUI said: out of memory")

    page = web.get(f"/batches/{batch.uuid}/").content.decode()

    cards = {uuid: text_of(body) for uuid, body in re.findall(r'<li class="card[^"]*" id="job-([^"]+)"(.*?)</li>',
                                                               page, re.S)}
    assert "Succeeded" in cards[str(done.uuid)] and "$0.0340" in cards[str(done.uuid)]
    assert "Attempts 1 of 3" in cards[str(done.uuid)]
    assert "Failed" in cards[str(failed.uuid)] and "SwarmUI said: out of memory" in cards[str(failed.uuid)]
    assert "Queued" in cards[str(waiting.uuid)] and "0%" in cards[str(waiting.uuid)]
    assert f'src="/api/jobs/{done.uuid}/video"' in page and f'poster="/api/jobs/{done.uuid}/poster"' in page
    assert f'src="/jobs/{waiting.uuid}/input"' in page
    assert f'data-batch-api="/api/batches/{batch.uuid}/jobs/"' in page and 'data-finished="false"' in page


def test_the_batch_page_offers_only_the_actions_that_apply(web, user):
    batch = make_batch(user, count=2)
    first, second = batch.jobs.all()
    finish_job(first)
    finish_job(second, status=S.FAILED)

    page = web.get(f"/batches/{batch.uuid}/").content.decode()

    assert re.search(r'<a class="button primary" data-when="succeeded" href="[^"]+download.zip">', page)
    assert re.search(r'action="[^"]+/retry/" data-when="failed">', page)
    assert re.search(r'action="[^"]+/cancel/" data-when="active" hidden>', page)
    assert 'data-finished="true"' in page


def test_nobody_sees_another_users_batch_or_job(web, other_user):
    batch = make_batch(other_user)
    job = batch.jobs.get()

    assert web.get(f"/batches/{batch.uuid}/").status_code == 404
    assert web.get(f"/batches/{batch.uuid}/download.zip").status_code == 404
    assert web.get(f"/jobs/{job.uuid}/input").status_code == 404
    assert web.post(f"/batches/{batch.uuid}/cancel/").status_code == 404
    assert web.post(f"/jobs/{job.uuid}/retry/").status_code == 404
    assert Job.objects.get().status == S.QUEUED


def test_the_card_shows_the_input_image_to_its_owner(web, user, png):
    job = make_batch(user).jobs.get()

    response = web.get(f"/jobs/{job.uuid}/input")

    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content).startswith(b"\x89PNG")


def test_cancelling_the_batch_cancels_what_has_not_finished(web, user):
    batch = make_batch(user, count=2)
    finish_job(batch.jobs.first())

    response = web.post(f"/batches/{batch.uuid}/cancel/", follow=True)

    assert sorted(batch.jobs.values_list("status", flat=True)) == [S.CANCELLED, S.SUCCEEDED]
    assert "Cancelled 1 unfinished job." in response.content.decode()


def test_retrying_the_batch_requeues_its_failed_jobs(web, user):
    batch = make_batch(user, count=2)
    for job in batch.jobs.all():
        finish_job(job, status=S.FAILED)

    response = web.post(f"/batches/{batch.uuid}/retry/", follow=True)

    assert list(batch.jobs.values_list("status", flat=True)) == [S.QUEUED, S.QUEUED]
    assert "Retrying 2 failed jobs." in response.content.decode()


def test_one_job_can_be_cancelled_and_then_retried(web, user):
    job = make_batch(user, count=2).jobs.first()

    cancel = web.post(f"/jobs/{job.uuid}/cancel/")
    job.refresh_from_db()
    assert job.status == S.CANCELLED
    assert cancel["Location"] == f"/batches/{job.batch.uuid}/#job-{job.uuid}"

    web.post(f"/jobs/{job.uuid}/retry/")
    job.refresh_from_db()
    assert job.status == S.QUEUED and job.attempts == 0


def test_an_action_that_does_not_apply_says_so_and_changes_nothing(web, user):
    job = make_batch(user).jobs.get()

    response = web.post(f"/jobs/{job.uuid}/retry/", follow=True)

    assert "only failed or cancelled jobs can be retried" in response.content.decode()
    assert Job.objects.get().status == S.QUEUED


def test_actions_only_accept_post(web, user):
    batch = make_batch(user)

    assert web.get(f"/batches/{batch.uuid}/cancel/").status_code == 405
    assert Job.objects.get().status == S.QUEUED


def test_the_download_is_a_zip_of_finished_videos_with_a_manifest_of_every_job(web, user):
    rows = "file,prompt,seed\na.png,a cat,5\nb.png,a dog,6\n"
    web.post(NEW, form_data(pairing="rows", rows_text=rows, name="Pets at home"))
    batch = BatchRun.objects.get()
    cat, dog = batch.jobs.all()
    finish_job(cat, cost="0.0200")
    finish_job(dog, status=S.FAILED, error="out of memory")

    response = web.get(f"/batches/{batch.uuid}/download.zip")

    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert f'filename="pets-at-home-{str(batch.uuid)[:8]}.zip"' in response["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert archive.namelist() == ["manifest.csv", "videos/0001-a-seed5.mp4"]
    manifest = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    columns = ("input_file", "prompt", "seed", "status", "output_file", "cost_usd")
    assert [tuple(row[column] for column in columns) for row in manifest] == [
        ("a.png", "a cat", "5", "succeeded", "videos/0001-a-seed5.mp4", "0.0200"),
        ("b.png", "a dog", "6", "failed", "", ""),
    ]
    assert manifest[1]["error"] == "out of memory"
    with cat.output_video.open("rb") as stored:
        assert archive.read("videos/0001-a-seed5.mp4") == stored.read()


# --- GPU instance panel --------------------------------------------------------------------------


def test_the_instance_panel_says_when_no_gpu_is_rented(web):
    page = text_of(web.get("/instance/").content.decode())

    assert "No GPU is rented right now." in page and "No GPU has been rented yet." in page


def test_the_instance_panel_shows_the_active_instance_and_the_jobs_waiting(web, user):
    make_batch(user, provider="vastai", count=3)
    GpuInstance.objects.create(vast_id=4242, label="genhub", gpu_name="H100 SXM", dph_usd=Decimal("2.1500"),
                               state=GpuInstance.State.READY, last_health_ok=True, health_failures=0)

    page = text_of(web.get("/instance/").content.decode())

    active = page.split("Earlier instances")[0]
    for fact in ("State ready", "GPU H100 SXM", "Price $2.15/h", "Last health check none yet",
                 "Jobs waiting or running 3", "vast.ai id #4242"):
        assert fact in active, fact


def test_the_instance_panel_shows_failures_and_the_replacement_in_the_history(web):
    dead = GpuInstance.objects.create(vast_id=1, label="genhub", gpu_name="A100 SXM4", dph_usd=Decimal("1.2"),
                                      state=GpuInstance.State.DESTROYED, end_reason="vast reports the instance exited")
    InstanceEvent.objects.create(instance=dead, kind="health", message="health probe failed (1): timeout")
    InstanceEvent.objects.create(instance=dead, kind="state", from_state="ready", to_state="destroying",
                                 message="vast reports the instance exited")
    GpuInstance.objects.create(vast_id=2, label="genhub", gpu_name="H100 SXM", state=GpuInstance.State.LOADING)

    page = web.get("/instance/").content.decode()

    history = text_of(page.split("Earlier instances")[1])
    assert "vast #1 · A100 SXM4 destroyed" in history
    assert "Ended: vast reports the instance exited" in history and "Replaced by vast #2" in history
    assert "2 events, 1 problem" in history
    assert '<li class="problem">' in page and "ready → destroying" in history


def test_a_pasted_table_is_used_when_the_chosen_rows_file_is_empty(web):
    web.post(NEW, form_data(pairing="rows", rows_file=SimpleUploadedFile("empty.csv", b""),
                            rows_text="file,prompt\na.png,from the paste\nb.png,also pasted\n"))

    assert sorted(Job.objects.values_list("prompt", flat=True)) == ["also pasted", "from the paste"]


def test_a_missing_provider_is_reported_once_next_to_the_provider(web):
    data = form_data()
    del data["provider"]

    response = web.post(NEW, data)

    assert errors_next_to(response, "provider") == "unknown provider ''; choose one of fal, vastai"


# --- hostile uploads through the page (issue 10) ----------------------------------------------------


def test_an_image_over_the_size_limit_is_stopped_while_it_arrives_and_shown_on_the_page(web, settings, media_root):
    settings.GENHUB_MAX_IMAGE_BYTES = 2000
    big = SimpleUploadedFile("huge.png", b"\x89PNG" + bytes(100_000), content_type="image/png")

    response = web.post(NEW, form_data(images=[image_file("a.png"), big]))

    assert response.status_code == 400
    assert "huge.png" in text_of(response.content.decode())
    assert "too large: more than 2000 bytes" in text_of(response.content.decode())
    assert_nothing_created()
    assert not (media_root / "inputs").exists()


def test_more_files_than_django_allows_are_shown_on_the_page_not_a_bare_400(web, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2

    response = web.post(NEW, form_data(images=[image_file(f"i{n}.png") for n in range(4)]))

    assert response.status_code == 400
    assert "too many files in one request" in text_of(response.content.decode())
    assert 'id="batch-form"' in response.content.decode()
    assert_nothing_created()


def test_a_latin1_rows_file_is_refused_on_the_page_naming_the_line(web):
    rows = SimpleUploadedFile("rows.csv", "file,prompt\na.png,café crème\n".encode("latin-1"))

    response = web.post(NEW, form_data(pairing="rows", rows_file=rows))

    assert response.status_code == 400
    assert "line 2 is not UTF-8" in errors_next_to(response, "rows")
    assert_nothing_created()


def test_a_nul_in_a_prompt_of_the_rows_file_is_refused_on_the_page(web, media_root):
    rows = SimpleUploadedFile("rows.csv", b"file,prompt\na.png,waves\x00\nb.png,rain\n")

    response = web.post(NEW, form_data(pairing="rows", rows_file=rows))

    assert response.status_code == 400
    assert "must not contain NUL characters" in errors_next_to(response, "rows")
    assert_nothing_created()
    assert not (media_root / "inputs").exists()
