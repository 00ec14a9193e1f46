"""`/metrics`: Prometheus text read from the database at scrape time; staff or a bearer token only."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from gpu_instances.models import GpuInstance
from jobs.models import Job
from tests.conftest import wait_for
from tests.jobs.factories import make_batch

TOKEN = "metrics-token-0123456789"


def scrape(client, **headers) -> dict:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


@pytest.fixture
def staff(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


# --- who may read it --------------------------------------------------------------------------


@pytest.mark.django_db
def test_without_credentials_it_answers_401_with_a_bearer_challenge(settings):
    settings.GENHUB_METRICS_TOKEN = TOKEN
    response = Client().get("/metrics")
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
def test_a_logged_in_non_staff_user_gets_403(api):
    assert api.get("/metrics").status_code == 403


@pytest.mark.django_db
def test_the_configured_bearer_token_reads_it_and_a_wrong_one_gets_403(settings, caplog):
    settings.GENHUB_METRICS_TOKEN = TOKEN
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").status_code == 403
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403
    assert TOKEN not in caplog.text


@pytest.mark.django_db
def test_no_token_is_accepted_while_none_is_configured(settings):
    settings.GENHUB_METRICS_TOKEN = ""
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 403


@pytest.mark.django_db
def test_staff_read_it_with_their_session(staff):
    samples = scrape(staff)
    assert value(samples, "genhub_jobs", provider="fal", state="queued") == 0
    assert value(samples, "genhub_gpu_instance_state", state="ready") == 0


# --- the figures ------------------------------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
def test_the_figures_move_while_a_fal_batch_runs(staff, user, fal_sim, qcluster):
    fal_sim.run_seconds = 1.0
    batch = make_batch(user, count=3, params={"num_frames": 17, "resolution": "480p"})
    before = scrape(staff)
    assert value(before, "genhub_jobs", provider="fal", state="queued") == 3
    assert value(before, "genhub_spend_usd_total", provider="fal") == 0

    qcluster(FAL_POLL_INTERVAL="0.1")
    wait_for(lambda: value(scrape(staff), "genhub_fal_requests_in_flight") > 0, timeout=60,
             message="fal requests in flight")
    wait_for(lambda: not batch.jobs.exclude(status=Job.Status.SUCCEEDED).exists(), timeout=60,
             message="the batch to finish")

    after = scrape(staff)
    assert value(after, "genhub_jobs", provider="fal", state="succeeded") == 3
    assert value(after, "genhub_jobs", provider="fal", state="queued") == 0
    assert value(after, "genhub_fal_requests_in_flight") == 0
    assert value(after, "genhub_job_queue_wait_seconds_count", provider="fal") == 3
    assert value(after, "genhub_job_generation_seconds_count", provider="fal") == 3
    assert value(after, "genhub_job_generation_seconds_bucket", provider="fal", le="+Inf") == 3
    assert value(after, "genhub_job_generation_seconds_sum", provider="fal") > 0
    # 3 clips × 17 frames at fal's 16-fps seconds × $0.04 (480p) = $0.1275.
    assert value(after, "genhub_spend_usd_total", provider="fal") == pytest.approx(0.1275)


@pytest.mark.django_db
def test_gpu_figures_state_busy_fraction_replacements_and_spend(staff, user):
    hour_ago = timezone.now() - timedelta(hours=1)
    reasons = ("unhealthy: 3 failed probes over 75s (timeout)", "vast reports actual_status=exited",
               "operator: destroy_instance", "released: idle for 30 min (GENHUB_IDLE_SHUTDOWN_MINUTES)")
    for number, reason in enumerate(reasons, start=1):
        GpuInstance.objects.create(label="genhub", vast_id=number, state="destroyed",
                                   end_reason=reason, dph_usd=Decimal("1.0000"))
    half_hour_later = hour_ago + timedelta(minutes=30)
    GpuInstance.objects.filter(label="genhub").update(created_at=hour_ago, destroyed_at=half_hour_later)
    active = GpuInstance.objects.create(label="genhub", vast_id=7, state="ready", dph_usd=Decimal("2.0000"))
    GpuInstance.objects.filter(pk=active.pk).update(created_at=timezone.now() - timedelta(seconds=1000))
    job = make_batch(user, provider="vastai").jobs.get()
    Job.objects.filter(pk=job.pk).update(instance=active, status=Job.Status.SUCCEEDED, generation_seconds=250,
                                         started_at=timezone.now(), finished_at=timezone.now())

    samples = scrape(staff)

    assert value(samples, "genhub_gpu_instance_state", state="ready") == 1
    assert value(samples, "genhub_gpu_instance_state", state="loading") == 0
    assert value(samples, "genhub_gpu_instance_busy_fraction") == pytest.approx(0.25, abs=0.01)
    assert value(samples, "genhub_gpu_instance_replacements_total", cause="health") == 1
    assert value(samples, "genhub_gpu_instance_replacements_total", cause="vast_reported_dead") == 1
    assert not [key for key in samples if key[0] == "genhub_gpu_instance_replacements_total"
                and dict(key[1])["cause"] in ("operator", "released")]
    # 4 × half an hour at $1/h, plus the active one: 1000 s at $2/h.
    assert value(samples, "genhub_spend_usd_total", provider="vastai") == pytest.approx(2.0 + 2000 / 3600, abs=0.01)
    assert value(samples, "genhub_job_generation_seconds_sum", provider="vastai") == 250
    assert value(samples, "genhub_job_generation_seconds_bucket", provider="vastai", le="180.0") == 0
    assert value(samples, "genhub_job_generation_seconds_bucket", provider="vastai", le="300.0") == 1


@pytest.mark.django_db
def test_the_gpu_figures_move_while_a_vastai_batch_runs(staff, user, vast_sim, drain):
    batch = make_batch(user, provider="vastai", count=2)
    before = scrape(staff)
    assert value(before, "genhub_jobs", provider="vastai", state="queued") == 2
    assert value(before, "genhub_gpu_instance_state", state="ready") == 0

    drain(until=lambda: GpuInstance.objects.filter(state=GpuInstance.State.LOADING).exists())
    booting = scrape(staff)
    assert value(booting, "genhub_gpu_instance_state", state="loading") == 1
    assert value(booting, "genhub_jobs", provider="vastai", state="running") == 0
    assert value(booting, "genhub_job_queue_wait_seconds_count", provider="vastai") == 0

    drain(until=lambda: batch.jobs.filter(status=Job.Status.SUCCEEDED).count() == 2)
    after = scrape(staff)
    assert value(after, "genhub_gpu_instance_state", state="ready") == 1
    assert value(after, "genhub_jobs", provider="vastai", state="succeeded") == 2
    assert value(after, "genhub_job_generation_seconds_count", provider="vastai") == 2
    assert value(after, "genhub_job_queue_wait_seconds_count", provider="vastai") == 2
    assert 0 < value(after, "genhub_gpu_instance_busy_fraction") <= 1
    assert value(after, "genhub_spend_usd_total", provider="vastai") > 0
