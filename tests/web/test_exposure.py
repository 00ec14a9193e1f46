"""Least exposure (issue 10): users who are not staff see the GPU's state, GPU, price and what it is
doing, never its address or token; staff see everything."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from gpu_instances.exposure import redact
from gpu_instances.models import GpuInstance, InstanceEvent
from jobs.models import Job
from tests.jobs.factories import make_batch
from tests.web.helpers import text_of

pytestmark = pytest.mark.django_db
ADDRESS = "http://203.0.113.7:40123"
TOKEN = "swarm-token-1f2e3d4c5b6a"


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("root", password="root-password-1", is_staff=True)


@pytest.fixture
def gpu(db):
    instance = GpuInstance.objects.create(vast_id=77, label="genhub", gpu_name="H100 SXM", dph_usd="2.1000",
                                          state=GpuInstance.State.READY, base_url=ADDRESS, swarmui_token=TOKEN)
    InstanceEvent.objects.create(instance=instance, kind="state", from_state="loading", to_state="ready",
                                 message=f"SwarmUI ready at {ADDRESS} after 312s")
    InstanceEvent.objects.create(instance=instance, kind="health", message=(
        f"SwarmUI: POST {ADDRESS}/API/GetNewSession failed: ConnectTimeout; token {TOKEN}"))
    old = GpuInstance.objects.create(vast_id=76, label="old", gpu_name="A100 SXM4", state=GpuInstance.State.DESTROYED,
                                     base_url="http://198.51.100.2:7801",
                                     end_reason="unhealthy: SwarmUI at 198.51.100.2:7801 stopped answering")
    return instance, old


def as_client(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def leaks(text: str) -> list[str]:
    return [secret for secret in ("203.0.113.7", "40123", TOKEN, "198.51.100.2") if secret in text]


def test_the_instance_panel_shows_a_user_what_the_gpu_does_but_not_where_it_is(user, gpu):
    page = as_client(user).get("/instance/").content.decode()

    assert leaks(page) == []
    shown = text_of(page)
    assert "H100 SXM" in shown and "$2.10/h" in shown and "ready" in shown
    assert "SwarmUI ready at [address hidden] after 312s" in shown
    assert "stopped answering" in shown


def test_staff_see_the_instance_panel_whole(staff, gpu):
    page = as_client(staff).get("/instance/").content.decode()

    assert f"SwarmUI ready at {ADDRESS}" in page and "198.51.100.2:7801" in page


def test_the_instance_api_gives_a_user_no_address_and_staff_the_address(user, staff, gpu):
    for_user = as_client(user).get("/api/instance/")
    for_staff = as_client(staff).get("/api/instance/").json()

    assert for_user.status_code == 200 and leaks(for_user.content.decode()) == []
    assert for_user.json()["active"]["address"] is None and for_user.json()["active"]["gpu_name"] == "H100 SXM"
    assert for_staff["active"]["address"] == ADDRESS
    old = next(row for row in for_staff["history"] if row["vast_id"] == 76)
    assert "198.51.100.2:7801" in old["end_reason"]
    assert TOKEN not in str(for_staff)  # the token is shown to nobody


def test_a_jobs_error_quoting_the_gpu_is_shown_without_its_address_on_the_batch_page_and_in_json(user, staff, gpu):
    instance, _ = gpu
    batch = make_batch(user, provider="vastai")
    message = f"SwarmUI: POST {ADDRESS}/API/GenerateText2ImageWS failed: ReadTimeout"
    Job.objects.update(status=Job.Status.FAILED, error_code="transient", error_message=message, instance=instance,
                       fallback_reason=f"failed on the GPU: {message}")
    job = Job.objects.get()

    client = as_client(user)
    page = client.get(f"/batches/{batch.uuid}/").content.decode()
    batch_json = client.get(f"/api/batches/{batch.uuid}/").content.decode()
    job_json = client.get(f"/api/jobs/{job.uuid}/").json()

    assert leaks(page) == [] and leaks(batch_json) == [] and leaks(str(job_json)) == []
    assert job_json["error"]["message"] == "SwarmUI: POST [address hidden]/API/GenerateText2ImageWS failed: ReadTimeout"
    job.refresh_from_db()
    assert job.error_message == message  # only what is shown changes
    assert ADDRESS in as_client(staff).get(f"/api/jobs/{job.uuid}/").json()["error"]["message"]


def test_the_export_manifest_hides_the_gpu_address_from_a_user(user, gpu):
    instance, _ = gpu
    batch = make_batch(user, provider="vastai")
    Job.objects.update(status=Job.Status.FAILED, error_code="x", error_message=f"at {ADDRESS}: refused",
                       instance=instance)

    response = as_client(user).get(f"/batches/{batch.uuid}/download.zip")
    body = b"".join(response.streaming_content)

    assert response.status_code == 200 and b"203.0.113.7" not in body


@pytest.mark.parametrize("text", [
    "https://10.0.0.5:8443/View/x.mp4", "1.2.3.4:7801", "[2001:db8::1]:7801", "ssh4.vast.ai:20514",
    "ws://host.example:80/API/x"])
def test_every_kind_of_address_is_redacted(text):
    assert redact(f"failed at {text} now") == "failed at [address hidden] now"
