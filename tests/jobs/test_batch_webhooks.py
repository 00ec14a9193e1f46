"""Batch webhooks: where they may point, a per-batch secret shown once, signed durable deliveries
(retried with backoff, re-delivered by the schedule), job events when asked, end to end on a cluster."""

import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from django_q.models import OrmQ

from jobs import batch_events, webhooks
from jobs.models import BatchRun, Job, WebhookDelivery
from tests.conftest import wait_for
from tests.jobs.factories import make_batch
from tests.jobs.test_alerts import WebhookReceiver

S = Job.Status


def verify(secret: str, headers: dict, body: bytes) -> bool:
    expected = hmac.new(secret.encode(), headers["X-Genhub-Timestamp"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    return headers["X-Genhub-Signature"] == f"sha256={expected}"


@pytest.fixture
def hook(settings):
    """A local receiver; local addresses and plain http allowed, as only a test needs."""
    settings.GENHUB_ALLOW_PRIVATE_DOWNLOADS = True
    settings.GENHUB_WEBHOOK_ALLOW_HTTP = True
    server = WebhookReceiver().start()
    yield server
    server.release.set()
    server.stop()


def post_batch(api, png, **fields):
    return api.post("/api/batches/", {"provider": "fal", "prompt": "p", "images": [SimpleUploadedFile("a.png", png)],
                                      **fields}, format="multipart")


# --- where a webhook may point -----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("url, message", [
    ("not a url", "without spaces"),
    ("ftp://example.com/hook", "https://"),
    ("http://example.com/hook", "https://"),
    ("https:///hook", "must name a host"),
    ("https://user:pw@example.com/hook", "user name or password"),
    ("https://127.0.0.1/hook", "private or local address"),
    ("https://10.1.2.3/hook", "private or local address"),
    ("https://[::1]/hook", "private or local address"),
    ("https://169.254.169.254/latest/meta-data", "private or local address"),
    ("https://localhost:8443/hook", "private or local address"),
])
def test_a_bad_webhook_url_is_a_400_naming_the_field(api, png, settings, url, message):
    settings.GENHUB_WEBHOOK_ALLOW_HTTP = False
    settings.GENHUB_ALLOW_PRIVATE_DOWNLOADS = False  # on in the suite for the simulators; off in production
    response = post_batch(api, png, webhook_url=url)
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["field"] == "webhook_url" and message in error["message"]
    assert not BatchRun.objects.exists()


def test_http_and_private_addresses_only_with_their_settings(settings):
    settings.GENHUB_WEBHOOK_ALLOW_HTTP = True
    settings.GENHUB_ALLOW_PRIVATE_DOWNLOADS = False
    assert "private" in webhooks.url_problem("http://127.0.0.1:9000/hook")
    settings.GENHUB_ALLOW_PRIVATE_DOWNLOADS = True
    assert webhooks.url_problem("http://127.0.0.1:9000/hook") is None
    settings.GENHUB_WEBHOOK_ALLOW_HTTP = False
    assert "https://" in webhooks.url_problem("http://127.0.0.1:9000/hook")


@pytest.mark.django_db
def test_job_events_without_a_url_are_refused(api, png, settings):
    settings.GENHUB_ALLOW_PRIVATE_DOWNLOADS = True  # no name resolution in the test
    response = post_batch(api, png, webhook_events="batch,job")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "webhook_events"
    response = post_batch(api, png, webhook_events="everything", webhook_url="https://example.com/h")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "webhook_events"


# --- the secret -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_per_batch_secret_is_shown_once_and_never_again(api, png, hook, admin_client):
    response = post_batch(api, png, webhook_url=f"{hook.url}/h")
    assert response.status_code == 201, response.content
    secret = response.json()["webhook_secret"]
    assert len(secret) >= 40 and BatchRun.objects.get().webhook_secret == secret

    batch_id = response.json()["id"]
    assert secret not in api.get(f"/api/batches/{batch_id}/").content.decode()
    assert secret not in api.get("/api/batches/").content.decode()
    batch = BatchRun.objects.get()
    assert secret not in admin_client.get(f"/admin/jobs/batchrun/{batch.pk}/change/").content.decode()
    assert "webhook_secret" not in post_batch(api, png).json()  # no webhook, no secret


# --- delivery -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_finished_batch_is_posted_once_signed_with_its_own_secret(user, hook, django_capture_on_commit_callbacks):
    batch = make_batch(user, count=2, webhook_url=f"{hook.url}/hooks/genhub")
    assert batch_events.events_collect() == 0  # not finished yet
    batch.jobs.update(status=S.SUCCEEDED, finished_at=timezone.now())

    with django_capture_on_commit_callbacks(execute=True):
        assert batch_events.events_collect() == 1
    assert batch_events.events_collect() == 0  # once
    (delivery,) = WebhookDelivery.objects.all()
    assert [row.task["func"] for row in OrmQ.objects.all()] == ["jobs.tasks.deliver_webhook"]

    assert batch_events.delivery_send(delivery_id=delivery.pk)
    (headers, body), = hook.received
    batch.refresh_from_db()
    assert verify(batch.webhook_secret, headers, body)
    assert headers["X-Genhub-Event"] == "batch.finished" and headers["X-Genhub-Delivery"] == str(delivery.uuid)
    payload = json.loads(body)
    assert payload["event"] == "batch.finished" and payload["batch"]["status"] == "succeeded"
    assert payload["batch"]["id"] == str(batch.uuid) and len(payload["jobs"]) == 2
    delivery.refresh_from_db()
    assert delivery.delivered_at and delivery.attempts == 1
    assert batch_events.delivery_send(delivery_id=delivery.pk)  # already delivered: not sent again
    assert len(hook.received) == 1


@pytest.mark.django_db
def test_a_failing_receiver_is_retried_with_backoff_and_redelivered_by_the_schedule(
        user, hook, django_capture_on_commit_callbacks):
    hook.status = 503
    batch = make_batch(user, webhook_url=f"{hook.url}/h")
    batch.jobs.update(status=S.CANCELLED, finished_at=timezone.now())
    batch_events.events_collect()
    delivery = WebhookDelivery.objects.get()

    assert not batch_events.delivery_send(delivery_id=delivery.pk)
    assert len(hook.received) == webhooks.TRIES_PER_ATTEMPT  # the HTTP seam's bounded retries
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and "503" in delivery.last_error and delivery.delivered_at is None
    assert delivery.next_attempt_at > timezone.now()

    OrmQ.objects.all().delete()
    assert batch_events.deliveries_retry_due() == 0  # not due yet
    WebhookDelivery.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    hook.status = 200
    with django_capture_on_commit_callbacks(execute=True):
        assert batch_events.webhooks_tick() == (0, 1)
        assert batch_events.webhooks_tick() == (0, 0)  # queued once, not again on the next tick
    assert [row.task["func"] for row in OrmQ.objects.all()] == ["jobs.tasks.deliver_webhook"]
    assert batch_events.delivery_send(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.delivered_at and delivery.attempts == 2 and delivery.last_error == ""


@pytest.mark.django_db
def test_delivery_gives_up_after_the_attempt_limit(user, hook, settings):
    settings.GENHUB_ALERT_WEBHOOK_MAX_ATTEMPTS = 2
    hook.status = 500
    batch = make_batch(user, webhook_url=f"{hook.url}/h")
    batch.jobs.update(status=S.FAILED, finished_at=timezone.now())
    batch_events.events_collect()
    delivery = WebhookDelivery.objects.get()
    assert not batch_events.delivery_send(delivery_id=delivery.pk)
    assert not batch_events.delivery_send(delivery_id=delivery.pk)
    sent = len(hook.received)
    assert not batch_events.delivery_send(delivery_id=delivery.pk)
    assert len(hook.received) == sent  # out of attempts: nothing more is sent
    WebhookDelivery.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert batch_events.deliveries_retry_due() == 0


@pytest.mark.django_db
def test_a_url_that_now_resolves_privately_is_refused_at_send_time(user, hook, settings):
    batch = make_batch(user, webhook_url=f"{hook.url}/h")
    batch.jobs.update(status=S.SUCCEEDED, finished_at=timezone.now())
    batch_events.events_collect()
    settings.GENHUB_ALLOW_PRIVATE_DOWNLOADS = False
    assert not batch_events.delivery_send(delivery_id=WebhookDelivery.objects.get().pk)
    assert hook.received == []
    assert "private or local address" in WebhookDelivery.objects.get().last_error


@pytest.mark.django_db
def test_job_events_come_first_and_the_batch_event_last(user, hook):
    batch = make_batch(user, count=3, webhook_url=f"{hook.url}/h", webhook_events="batch,job")
    first, *rest = batch.jobs.order_by("position")
    Job.objects.filter(pk=first.pk).update(status=S.SUCCEEDED, finished_at=timezone.now())
    assert batch_events.events_collect() == 1
    assert WebhookDelivery.objects.get().event == "job.finished"

    Job.objects.filter(pk__in=[job.pk for job in rest]).update(status=S.FAILED, error_code="x", error_message="bad",
                                                               finished_at=timezone.now())
    assert batch_events.events_collect() == 3  # two job events, then the batch's
    events = list(WebhookDelivery.objects.order_by("id").values_list("event", flat=True))
    assert events == ["job.finished"] * 3 + ["batch.finished"]
    for delivery in WebhookDelivery.objects.order_by("id"):
        assert batch_events.delivery_send(delivery_id=delivery.pk)
    bodies = [json.loads(body) for _, body in hook.received]
    assert bodies[1]["job"]["error"] == {"code": "x", "message": "bad"}
    assert bodies[-1]["batch"]["status"] == "completed_with_failures"


@pytest.mark.django_db
def test_a_retried_batch_is_reported_again_when_it_finishes_again(user, hook):
    from jobs import services

    batch = make_batch(user, webhook_url=f"{hook.url}/h")
    batch.jobs.update(status=S.FAILED, finished_at=timezone.now())
    assert batch_events.events_collect() == 1
    services.batch_retry_failed(batch=batch)
    assert batch_events.events_collect() == 0
    batch.jobs.update(status=S.SUCCEEDED)
    assert batch_events.events_collect() == 1
    assert WebhookDelivery.objects.count() == 2


@pytest.mark.django_db
def test_the_signature_is_hmac_sha256_of_the_timestamp_a_dot_and_the_body():
    assert webhooks.signature("s", "1", b"{}") == hmac.new(b"s", b"1.{}", hashlib.sha256).hexdigest()


# --- end to end ---------------------------------------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
def test_a_batch_on_a_real_cluster_posts_its_jobs_and_its_end_to_the_webhook(api, png, fal_sim, qcluster, hook):
    images = [SimpleUploadedFile(f"s{i}.png", png) for i in range(3)]
    response = api.post("/api/batches/", {"provider": "fal", "prompt": "p", "images": images,
                                          "params": '{"num_frames": 17}', "webhook_url": f"{hook.url}/h",
                                          "webhook_events": "batch,job"}, format="multipart")
    assert response.status_code == 201, response.content
    secret = response.json()["webhook_secret"]

    qcluster(FAL_POLL_INTERVAL="0.2", GENHUB_ALLOW_PRIVATE_DOWNLOADS="1", GENHUB_WEBHOOK_ALLOW_HTTP="1")
    wait_for(lambda: len(hook.received) >= 4, timeout=120, message="3 job events and the batch event")

    bodies = [json.loads(body) for _, body in hook.received]
    assert all(verify(secret, headers, body) for headers, body in hook.received)
    assert sorted(b["event"] for b in bodies) == ["batch.finished"] + ["job.finished"] * 3
    final = next(b for b in bodies if b["event"] == "batch.finished")
    assert final["batch"]["status"] == "succeeded"
    assert all(job["output_url"] for job in final["jobs"])
    # The receiver has the POST before the cluster records its answer: wait for the record, not a moment.
    wait_for(lambda: not WebhookDelivery.objects.filter(delivered_at__isnull=True).exists(), timeout=30,
             message="every delivery to be recorded as delivered")


class RedirectingReceiver(WebhookReceiver):
    def __init__(self, to: str):
        super().__init__()
        self.to = to

    def handle(self, request):
        self.received.append((dict(request.headers), request.read_body()))
        request.send_json(307, {}, headers={"Location": self.to})


@pytest.mark.django_db
def test_a_redirect_is_not_followed_and_counts_as_a_failed_attempt(user, hook):
    # The receiver could bounce the POST to an address the URL rules refuse (here: `hook`).
    bouncer = RedirectingReceiver(to=f"{hook.url}/inside").start()
    try:
        batch = make_batch(user, webhook_url=f"{bouncer.url}/h")
        batch.jobs.update(status=S.SUCCEEDED, finished_at=timezone.now())
        batch_events.events_collect()
        assert not batch_events.delivery_send(delivery_id=WebhookDelivery.objects.get().pk)
    finally:
        bouncer.stop()
    assert bouncer.received and hook.received == []
    assert "307" in WebhookDelivery.objects.get().last_error
