"""The batch and job API: creation, every validation error, owner-only access, token auth."""

import json
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from jobs.models import Alert, BatchRun, Job
from providers.simulators.media import make_image
from tests.jobs.factories import make_batch

pytestmark = pytest.mark.django_db


def image_file(name="cat.png", **kwargs):
    return SimpleUploadedFile(name, make_image(**kwargs), content_type="image/png")


def post_batch(client, **fields):
    data = {"provider": "fal", "prompt": "the camera slowly orbits"}
    data.update(fields)
    data.setdefault("images", [image_file("a.png"), image_file("b.png", color=(1, 2, 3))])
    return client.post("/api/batches/", data, format="multipart")


def assert_rejected(response, field, item=None, fragment=""):
    assert response.status_code == 400, response.content
    body = response.json()
    assert "Nothing was created" in body["message"]
    matches = [e for e in body["errors"] if e["field"] == field and (item is None or e.get("item") == item)]
    assert matches, body["errors"]
    assert any(fragment in e["message"] for e in matches), matches
    assert BatchRun.objects.count() == 0 and Job.objects.count() == 0


def test_it_creates_a_batch_with_a_job_per_image(api):
    response = post_batch(api, name="orbit", params=json.dumps({"num_frames": 49, "resolution": "720p"}))

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "orbit" and body["provider"] == "fal" and body["status"] == "queued"
    assert body["total"] == 2 and body["counts"]["queued"] == 2
    assert [j["input_name"] for j in body["jobs"]] == ["a.png", "b.png"]
    assert all(j["params"]["num_frames"] == 49 and j["params"]["resolution"] == "720p" for j in body["jobs"])
    assert all(j["status"] == "queued" and j["output_url"] is None for j in body["jobs"])


def test_rows_pair_file_names_with_their_own_prompt_and_seed(api):
    rows = "file,prompt,seed\na.png,a cat turns its head,42\nb.png,,7\n"

    response = post_batch(api, items=rows)

    assert response.status_code == 201, response.content
    jobs = {j["input_name"]: j for j in response.json()["jobs"]}
    assert (jobs["a.png"]["prompt"], jobs["a.png"]["seed"]) == ("a cat turns its head", 42)
    assert (jobs["b.png"]["prompt"], jobs["b.png"]["seed"]) == ("the camera slowly orbits", 7)


def test_json_rows_and_seeds_per_image_multiply_the_jobs(api):
    rows = json.dumps([{"file": "a.png", "prompt": "waves", "seed": 10}])

    response = post_batch(api, items=rows, seeds_per_image=3, images=[image_file("a.png")])

    assert response.status_code == 201, response.content
    assert [j["seed"] for j in response.json()["jobs"]] == [10, 11, 12]


def test_identical_images_are_stored_once(api, media_root):
    response = post_batch(api, images=[image_file("a.png"), image_file("b.png")])

    assert response.status_code == 201
    assert len(list((media_root / "inputs").rglob("*.png"))) == 1


def test_a_file_that_is_not_an_image_is_rejected(api):
    bad = SimpleUploadedFile("notes.png", b"this is not a picture", content_type="image/png")
    assert_rejected(post_batch(api, images=[image_file("a.png"), bad]), "images", "notes.png", "not an image")


def test_a_too_large_image_is_rejected(api, settings):
    settings.GENHUB_MAX_IMAGE_BYTES = 1000
    assert_rejected(post_batch(api), "images", "a.png", "too large")


def test_a_too_small_image_is_rejected(api):
    assert_rejected(post_batch(api, images=[image_file("tiny.png", width=32, height=32)]), "images", "tiny.png",
                    "pixels")


def test_too_many_items_are_rejected(api, settings):
    settings.GENHUB_MAX_BATCH_ITEMS = 2
    images = [image_file(f"{i}.png", color=(i, i, i)) for i in range(3)]
    assert_rejected(post_batch(api, images=images), "images", None, "too many items")


def test_too_many_items_after_seeds_per_image_are_rejected(api, settings):
    settings.GENHUB_MAX_BATCH_ITEMS = 4
    assert_rejected(post_batch(api, seeds_per_image=3), "images", None, "6 jobs")


def test_an_unknown_provider_is_rejected(api):
    assert_rejected(post_batch(api, provider="runpod"), "provider", None, "unknown provider 'runpod'")


@pytest.mark.parametrize("params, field, fragment", [
    ({"num_frames": 80}, "params.num_frames", "4n+1"),
    ({"num_frames": 200}, "params.num_frames", "between 17 and 161"),
    ({"fps": 0}, "params.fps", "between 4 and 60"),
    ({"steps": 100}, "params.steps", "between 2 and 40"),
    ({"cfg": "loud"}, "params.cfg", "number"),
    ({"resolution": "4k"}, "params.resolution", "480p"),
    ({"width": 500, "height": 480}, "params.width", "multiple of 16"),
    ({"seed": -1}, "params.seed", "between 0"),
    ({"shift": 5}, "params.shift", "unknown parameter"),
])
def test_parameters_out_of_range_are_rejected(api, params, field, fragment):
    assert_rejected(post_batch(api, params=json.dumps(params)), field, None, fragment)


def test_params_that_are_not_json_are_rejected(api):
    assert_rejected(post_batch(api, params="{frames: 81"), "params", None, "not valid JSON")


def test_an_image_without_any_prompt_is_rejected(api):
    assert_rejected(post_batch(api, prompt=""), "prompt", "a.png", "no prompt")


def test_a_row_naming_a_missing_file_is_rejected(api):
    assert_rejected(post_batch(api, items="file,prompt\nmissing.png,hello\n"), "items", "missing.png",
                    "no uploaded image")


def test_every_problem_is_listed_at_once(api):
    bad = SimpleUploadedFile("x.png", b"nope")
    response = post_batch(api, provider="nope", params=json.dumps({"fps": 99}), images=[bad])
    fields = {e["field"] for e in response.json()["errors"]}
    assert {"provider", "params.fps", "images"} <= fields


def test_another_user_cannot_see_or_act_on_your_batch(user, other_user):
    batch = make_batch(user)
    job = batch.jobs.get()
    intruder = APIClient()
    intruder.force_login(other_user)

    for path in (f"/api/batches/{batch.uuid}/", f"/api/jobs/{job.uuid}/", f"/api/jobs/{job.uuid}/video"):
        assert intruder.get(path).status_code == 404
    for path in (f"/api/batches/{batch.uuid}/cancel/", f"/api/batches/{batch.uuid}/retry/",
                 f"/api/jobs/{job.uuid}/cancel/", f"/api/jobs/{job.uuid}/retry/"):
        assert intruder.post(path).status_code == 404
    assert intruder.get("/api/batches/").json()["results"] == []
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED


def test_staff_see_every_batch(user, admin_user):
    make_batch(user)
    staff = APIClient()
    staff.force_login(admin_user)
    assert staff.get("/api/batches/").json()["count"] == 1


def test_token_auth_works_and_anonymous_is_refused(user):
    token = Token.objects.create(user=user)
    make_batch(user)
    client = APIClient()

    assert client.get("/api/batches/").status_code in (401, 403)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get("/api/batches/").json()["count"] == 1
    response = post_batch(client)
    assert response.status_code == 201


def test_the_batch_list_is_paginated_with_counts(api, user):
    for _ in range(3):
        make_batch(user, count=2)
    body = api.get("/api/batches/?page=1").json()
    assert body["count"] == 3
    assert body["results"][0]["counts"]["queued"] == 2


def test_cancel_and_retry_through_the_api(api, user):
    batch = make_batch(user, count=2)
    job = batch.jobs.first()

    assert api.post(f"/api/jobs/{job.uuid}/cancel/").json()["status"] == "cancelled"
    assert api.post(f"/api/jobs/{job.uuid}/cancel/").status_code == 409
    assert api.post(f"/api/jobs/{job.uuid}/retry/").json()["status"] == "queued"
    assert api.post(f"/api/batches/{batch.uuid}/cancel/").json() == {"changed": 2}
    detail = api.get(f"/api/batches/{batch.uuid}/").json()
    assert detail["status"] == "cancelled" and detail["counts"]["cancelled"] == 2


def test_the_request_query_count_does_not_grow_with_items(api):
    def queries_for(count):
        images = [image_file(f"{i}.png", color=(i, 0, 0)) for i in range(count)]
        with CaptureQueriesContext(connection) as ctx:
            assert post_batch(api, images=images).status_code == 201
        return len(ctx)

    assert queries_for(3) == queries_for(30)


def test_the_openapi_schema_and_docs_are_served(api):
    schema = api.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/batches/" in schema.content
    assert api.get("/api/docs/").status_code == 200


# --- spend control through the API ---------------------------------------------------------


def test_a_batch_takes_a_budget_and_a_fallback_policy(api):
    response = post_batch(api, provider="vastai", budget_usd="12.50", fallback="attempts", fallback_after="2")

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["budget_usd"], body["fallback"], body["fallback_after"]) == ("12.50", "attempts", 2)
    assert body["costs"]["other_provider"] == "fal"


@pytest.mark.parametrize("fields, field, fragment", [
    ({"budget_usd": "lots"}, "budget_usd", "amount in USD"),
    ({"budget_usd": "-1"}, "budget_usd", "at least 0"),
    ({"fallback": "sometimes"}, "fallback", "never, unrecoverable, attempts"),
    ({"provider": "vastai", "fallback": "unrecoverable"}, "fallback_after", "number of minutes"),
    ({"provider": "vastai", "fallback": "attempts", "fallback_after": "50"}, "fallback_after", "(1–10)"),
    ({"provider": "fal", "fallback": "attempts", "fallback_after": "2"}, "fallback", "only a vastai batch"),
])
def test_bad_spend_options_are_rejected(api, fields, field, fragment):
    assert_rejected(post_batch(api, **fields), field, None, fragment)


def test_a_provider_without_credentials_is_refused_up_front(api, settings):
    settings.VAST_API_KEY = ""
    assert_rejected(post_batch(api, provider="vastai"), "provider", None, "vastai is not configured")


def test_raising_a_batch_budget_through_the_api(api, user):
    batch = make_batch(user)
    Job.objects.filter(batch=batch).update(status=Job.Status.PAUSED, paused_reason="batch budget reached")

    response = api.post(f"/api/batches/{batch.uuid}/budget/", {"budget_usd": "5.00"}, format="json")

    assert response.status_code == 200 and response.json()["budget_usd"] == "5.00"
    assert api.post(f"/api/batches/{batch.uuid}/budget/", {"budget_usd": "-2"}, format="json").status_code == 400
    batch.refresh_from_db()
    assert batch.budget_usd == Decimal("5.00")


def test_alerts_show_genhub_wide_ones_and_only_your_batches(api, user, other_user):
    mine, theirs = make_batch(user), make_batch(other_user)
    Alert.objects.create(kind="instance_down", key="instance_down", message="GPU down")
    Alert.objects.create(kind="batch_stalled", key="a", message="mine stalled", batch=mine)
    Alert.objects.create(kind="batch_stalled", key="b", message="theirs stalled", batch=theirs)

    messages = sorted(a["message"] for a in api.get("/api/alerts/").json())

    assert messages == ["GPU down", "mine stalled"]
