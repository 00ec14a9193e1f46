"""Alerts: raised once per condition, resolved when it clears, delivered signed to a webhook, retried."""

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from gpu_instances.models import GpuInstance
from jobs.alerts import alert_deliver, alerts_check
from jobs.models import Alert, BatchRun, Job
from providers.simulators.server import Simulator
from tests.jobs.factories import make_batch

pytestmark = pytest.mark.django_db
SECRET = "whsec-test"


class WebhookReceiver(Simulator):
    """A local webhook endpoint that records what it got, or fails on purpose."""

    def __init__(self, *, status=200, hang_seconds=0.0):
        super().__init__()
        self.status, self.hang_seconds = status, hang_seconds
        self.received = []
        self.release = threading.Event()

    def handle(self, request):
        body = request.read_body()
        self.received.append((dict(request.headers), body))
        if self.hang_seconds:
            self.release.wait(self.hang_seconds)
        request.send_json(self.status, {"ok": self.status < 300})


@pytest.fixture
def receiver(settings):
    started = []

    def start(**kwargs):
        server = WebhookReceiver(**kwargs).start()
        started.append(server)
        settings.GENHUB_ALERT_WEBHOOK_URL = f"{server.url}/hooks/genhub"
        settings.GENHUB_ALERT_WEBHOOK_SECRET = SECRET
        return server

    yield start
    for server in started:
        server.release.set()
        server.stop()


def waiting_vast_job(user, *, down_minutes):
    then = timezone.now() - timedelta(minutes=down_minutes)
    batch = make_batch(user, provider="vastai")
    Job.objects.filter(batch=batch).update(status=Job.Status.WAITING_FOR_GPU, created_at=then)
    instance = GpuInstance.objects.create(label="genhub", state="loading")
    GpuInstance.objects.filter(pk=instance.pk).update(created_at=then)
    return batch


def test_it_alerts_once_when_the_gpu_is_down_too_long_and_resolves_when_back(user, settings):
    settings.GENHUB_ALERT_INSTANCE_DOWN_MINUTES = 10
    waiting_vast_job(user, down_minutes=3)
    assert alerts_check() == []

    GpuInstance.objects.update(created_at=timezone.now() - timedelta(minutes=12))
    Job.objects.update(created_at=timezone.now() - timedelta(minutes=12))
    assert alerts_check() == ["instance_down"]
    assert alerts_check() == ["instance_down"]
    assert Alert.objects.filter(kind="instance_down").count() == 1

    GpuInstance.objects.update(state="ready")
    alerts_check()
    assert Alert.objects.get(kind="instance_down").resolved_at is not None


def test_it_warns_at_80_percent_of_a_batch_cap_and_again_at_100(user):
    batch = make_batch(user, count=3)
    BatchRun.objects.filter(pk=batch.pk).update(budget_usd=Decimal("1.00"))
    first, second, _ = batch.jobs.all()
    Job.objects.filter(pk=first.pk).update(status="succeeded", cost_usd=Decimal("0.85"))

    assert alerts_check() == [f"batch:{batch.pk}:budget_80"]
    Job.objects.filter(pk=second.pk).update(status="succeeded", cost_usd=Decimal("0.20"))
    assert alerts_check() == [f"batch:{batch.pk}:budget_100"]
    assert Alert.objects.get(key=f"batch:{batch.pk}:budget_80").resolved_at is not None
    assert "new work is paused" in Alert.objects.get(key=f"batch:{batch.pk}:budget_100").message


def test_it_alerts_on_the_monthly_cap(user, settings):
    settings.GENHUB_MONTHLY_BUDGET_USD = Decimal("0.10")
    job = make_batch(user).jobs.get()
    Job.objects.filter(pk=job.pk).update(status="succeeded", finished_at=timezone.now(), cost_usd=Decimal("0.09"))
    assert alerts_check() == ["monthly:budget_80"]


def test_it_alerts_on_a_batch_with_no_progress(user, settings):
    settings.GENHUB_ALERT_STALLED_MINUTES = 30
    batch = make_batch(user)
    BatchRun.objects.filter(pk=batch.pk).update(created_at=timezone.now() - timedelta(hours=1))
    assert alerts_check() == [f"batch:{batch.pk}:stalled"]
    Job.objects.filter(batch=batch).update(status="running", heartbeat_at=timezone.now())
    assert alerts_check() == []


def test_an_alert_is_delivered_signed_to_the_webhook(user, settings, receiver, django_capture_on_commit_callbacks):
    hook = receiver()
    settings.GENHUB_ALERT_INSTANCE_DOWN_MINUTES = 1
    waiting_vast_job(user, down_minutes=5)

    with django_capture_on_commit_callbacks(execute=True):
        alerts_check()
    alert = Alert.objects.get()
    assert alert_deliver(alert_id=alert.pk)

    (headers, body), = hook.received
    expected = hmac.new(SECRET.encode(), headers["X-Genhub-Timestamp"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    assert headers["X-Genhub-Signature"] == f"sha256={expected}"
    assert json.loads(body)["kind"] == "instance_down"
    alert.refresh_from_db()
    assert alert.delivered_at and alert.delivery_attempts == 1


def test_a_failing_webhook_is_retried_and_the_error_kept(user, settings, receiver):
    hook = receiver(status=503)
    settings.GENHUB_ALERT_INSTANCE_DOWN_MINUTES = 1
    waiting_vast_job(user, down_minutes=5)
    alerts_check()
    alert = Alert.objects.get()

    assert not alert_deliver(alert_id=alert.pk)

    assert len(hook.received) == 3  # the HTTP seam's bounded retries on a 5xx
    alert.refresh_from_db()
    assert alert.delivered_at is None and alert.delivery_attempts == 1 and "503" in alert.delivery_error

    hook.status = 200
    alerts_check()  # a later check enqueues the retry
    from django_q.models import OrmQ

    assert [row.task["func"] for row in OrmQ.objects.all()] == ["jobs.tasks.deliver_alert"]
    assert alert_deliver(alert_id=alert.pk)


def test_a_webhook_that_hangs_times_out(user, settings, receiver):
    receiver(hang_seconds=5)
    settings.GENHUB_ALERT_WEBHOOK_TIMEOUT = 0.3
    settings.GENHUB_ALERT_INSTANCE_DOWN_MINUTES = 1
    waiting_vast_job(user, down_minutes=5)
    alerts_check()

    assert not alert_deliver(alert_id=Alert.objects.get().pk)
    assert "failed" in Alert.objects.get().delivery_error
