"""Appending items to a batch (issue 13, item 3): `POST /api/batches/{id}/items/`, so 10,000 items can be
sent in pieces. Same validation as creation, all or nothing, idempotent by `Idempotency-Key`."""

import threading
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from rest_framework.test import APIClient

from jobs import fetching
from jobs.models import BatchAppend, BatchRun, Job
from providers.simulators.media import make_image
from tests.jobs.image_server import ImageServer

S = Job.Status


@pytest.fixture
def images():
    server = ImageServer()
    yield server
    server.stop()


def still(name: str, shade: int = 0) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, make_image(color=(shade, 100, 200)))


@pytest.fixture
def batch(api) -> dict:
    response = api.post("/api/batches/", {"provider": "fal", "prompt": "slow dolly", "params": '{"num_frames": 33}',
                                          "images": [still("a.png", 1), still("b.png", 2)]}, format="multipart")
    assert response.status_code == 201, response.content
    return response.json()


def append(api, batch, data, *, key=None, format="multipart"):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return api.post(f"/api/batches/{batch['id']}/items/", data, format=format, **headers)


def stored_inputs(media_root) -> set:
    return {path.name for path in (media_root / "inputs").rglob("*") if path.is_file()}


def test_appended_items_take_the_next_positions_and_the_batch_settings(api, batch, images):
    response = append(api, batch, {"prompt": "pan right", "images": [still("c.png", 3)],
                                   "items": f'file,image_url,prompt\nc.png,,\n,{images.url}/still.png,tilt up\n'})
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["appended"], body["first_position"], body["total"], body["replayed"]) == (2, 2, 4, False)
    assert [job["status"] for job in body["jobs"]] == ["queued", "fetching"]
    jobs = list(Job.objects.order_by("position"))
    assert [(job.position, job.input_name) for job in jobs] == [(0, "a.png"), (1, "b.png"), (2, "c.png"),
                                                                 (3, "still.png")]
    assert jobs[2].prompt == "pan right" and jobs[3].prompt == "tilt up"
    # The batch's provider and parameters hold for what is appended.
    assert {job.provider for job in jobs} == {"fal"} and {job.params["num_frames"] for job in jobs} == {33}
    fetching.fetch_waiting()
    jobs[3].refresh_from_db()
    assert jobs[3].status == S.QUEUED and jobs[3].params["num_frames"] == 33

    # A JSON body works the same way, and positions go on after the last one.
    more = append(api, batch, {"items": [{"image_url": f"{images.url}/other.png", "prompt": "zoom"}]}, format="json")
    assert more.status_code == 201 and more.json()["first_position"] == 4


def test_a_retried_append_with_the_same_idempotency_key_appends_nothing_more(api, batch, images):
    data = {"prompt": "p", "images": [still("c.png", 3)]}
    first = append(api, batch, data, key="piece-0001")
    assert first.status_code == 201, first.content
    data = {"prompt": "p", "images": [still("c.png", 3)]}  # the same request sent again (a lost reply)
    again = append(api, batch, data, key="piece-0001")
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert [job["id"] for job in again.json()["jobs"]] == [job["id"] for job in first.json()["jobs"]]
    assert Job.objects.count() == 3 and BatchAppend.objects.count() == 1
    # Another key is another piece.
    assert append(api, batch, {"prompt": "p", "images": [still("d.png", 4)]}, key="piece-0002").status_code == 201
    assert Job.objects.count() == 4


def test_an_idempotency_key_reused_for_other_items_is_refused(api, batch):
    assert append(api, batch, {"prompt": "p", "images": [still("c.png", 3)]}, key="k1").status_code == 201
    reused = append(api, batch, {"prompt": "p", "images": [still("c.png", 99)]}, key="k1")
    assert reused.status_code == 409 and "different request" in reused.json()["message"]
    assert Job.objects.count() == 3


def test_keys_are_per_batch(api, batch):
    other = api.post("/api/batches/", {"provider": "fal", "prompt": "p", "images": [still("x.png")]},
                     format="multipart").json()
    assert append(api, batch, {"prompt": "p", "images": [still("c.png")]}, key="same").status_code == 201
    assert append(api, other, {"prompt": "p", "images": [still("c.png")]}, key="same").status_code == 201
    assert Job.objects.filter(batch__uuid=other["id"]).count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_of_one_append_store_it_once(user, batch):
    """Two deliveries of the same request at once (a client retrying while the first is still running)."""
    results = []

    def send():
        try:
            client = APIClient()
            client.force_login(user)
            results.append(append(client, batch, {"prompt": "p", "images": [still("c.png", 3)]}, key="racing"))
        finally:
            connection.close()  # this thread's own

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(response.status_code for response in results) == [200, 201]
    assert Job.objects.count() == 3 and sorted(Job.objects.values_list("position", flat=True)) == [0, 1, 2]


def test_an_append_with_one_bad_item_stores_nothing_and_says_what_is_wrong(api, batch, media_root):
    before = stored_inputs(media_root)
    response = append(api, batch, {"prompt": "p", "images": [still("c.png", 3), SimpleUploadedFile(
        "broken.png", b"\x89PNG not really")], "items": "file,image_url\nc.png,\nbroken.png,\n,ftp://x/y.png\n"})
    assert response.status_code == 400
    body = response.json()
    assert body["message"].startswith("The batch was rejected") and len(body["errors"]) == 2
    assert {error.get("item") for error in body["errors"]} == {"broken.png", "ftp://x/y.png"}
    assert Job.objects.count() == 2 and stored_inputs(media_root) == before


@pytest.mark.parametrize("field", ["provider", "params", "preset", "budget_usd", "name"])
def test_what_the_batch_decides_cannot_be_changed_by_an_append(api, batch, field):
    response = append(api, batch, {"prompt": "p", field: "x", "images": [still("c.png")]})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == field and Job.objects.count() == 2


def test_the_item_limit_counts_the_whole_batch(api, batch, settings):
    settings.GENHUB_MAX_BATCH_ITEMS = 4
    over = append(api, batch, {"prompt": "p", "images": [still("c.png", 3)], "seeds_per_image": "3"})
    assert over.status_code == 400
    assert "the batch has 2 and this request adds 3; the limit is 4" in over.json()["errors"][0]["message"]
    assert append(api, batch, {"prompt": "p", "images": [still("c.png", 3)], "seeds_per_image": "2"}).status_code == 201
    full = append(api, batch, {"prompt": "p", "images": [still("d.png", 4)]})
    assert full.status_code == 400 and Job.objects.count() == 4


def test_a_cancelled_batch_takes_no_more_items(api, batch):
    api.post(f"/api/batches/{batch['id']}/cancel/")
    response = append(api, batch, {"prompt": "p", "images": [still("c.png")]})
    assert response.status_code == 409 and "cancelled" in response.json()["message"]
    assert Job.objects.count() == 2


def test_only_the_owner_may_append(batch, other_user):
    other_user.is_staff = True  # not even staff: the items are the owner's to choose
    other_user.save()
    client = APIClient()
    client.force_login(other_user)
    assert append(client, batch, {"prompt": "p", "images": [still("c.png")]}).status_code == 404
    assert APIClient().post(f"/api/batches/{batch['id']}/items/", {}).status_code in (401, 403)
    assert Job.objects.count() == 2


def test_appended_items_are_held_by_the_batch_budget(api, user, fal_sim, drain):
    from jobs.costs import fal_cost

    created = api.post("/api/batches/", {"provider": "fal", "prompt": "p", "params": '{"num_frames": 17}',
                                         "images": [still("a.png")]}, format="multipart").json()
    one_clip = fal_cost(Job.objects.get().params)
    BatchRun.objects.filter(uuid=created["id"]).update(budget_usd=one_clip.quantize(Decimal("0.01")) + Decimal("0.01"))
    assert append(api, created, {"prompt": "p", "images": [still("b.png", 9)]}).status_code == 201
    drain(until=lambda: Job.objects.filter(status=S.SUCCEEDED).count() == 1
          and Job.objects.filter(status=S.PAUSED).count() == 1)
    paused = Job.objects.get(status=S.PAUSED)
    assert paused.position == 1 and "budget" in paused.paused_reason
