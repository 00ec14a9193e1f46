"""The admin: every page renders, the actions go through the services, and no secret is ever shown."""

from decimal import Decimal

import pytest

from gpu_instances.models import GpuInstance, InstanceEvent
from jobs.models import Alert, Job
from tests.jobs.factories import make_batch

pytestmark = pytest.mark.django_db
TOKEN = "swarmui-secret-token-123456"


@pytest.fixture
def instance():
    instance = GpuInstance.objects.create(label="genhub", vast_id=4242, state="ready", swarmui_token=TOKEN,
                                          dph_usd=Decimal("1.20"), base_url="http://127.0.0.1:1")
    InstanceEvent.objects.create(instance=instance, kind="state", to_state="ready", message="ready")
    return instance


def test_every_admin_page_renders_and_never_shows_the_swarmui_token(admin_client, user, instance):
    batch = make_batch(user)
    job = batch.jobs.get()
    Alert.objects.create(kind="instance_down", key="instance_down", message="GPU down")
    pages = ["/admin/", "/admin/jobs/batchrun/", f"/admin/jobs/batchrun/{batch.pk}/change/", "/admin/jobs/job/",
             f"/admin/jobs/job/{job.pk}/change/", "/admin/jobs/alert/", "/admin/gpu_instances/gpuinstance/",
             f"/admin/gpu_instances/gpuinstance/{instance.pk}/change/", "/admin/gpu_instances/instanceevent/"]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        assert TOKEN not in response.content.decode(), page


def test_the_job_actions_cancel_and_retry_through_the_services(admin_client, user):
    job = make_batch(user).jobs.get()

    admin_client.post("/admin/jobs/job/", {"action": "cancel_jobs", "_selected_action": [job.pk]})
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED

    admin_client.post("/admin/jobs/job/", {"action": "retry_jobs", "_selected_action": [job.pk]})
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED


def test_the_batch_action_retries_only_failed_jobs(admin_client, user):
    batch = make_batch(user, count=2)
    failed, done = batch.jobs.all()
    Job.objects.filter(pk=failed.pk).update(status=Job.Status.FAILED)
    Job.objects.filter(pk=done.pk).update(status=Job.Status.SUCCEEDED)

    admin_client.post("/admin/jobs/batchrun/", {"action": "retry_failed", "_selected_action": [batch.pk]})

    assert {j.pk: j.status for j in batch.jobs.all()} == {failed.pk: "queued", done.pk: "succeeded"}


def test_jobs_and_history_cannot_be_edited_in_the_admin(admin_client, user):
    job = make_batch(user).jobs.get()
    response = admin_client.post(f"/admin/jobs/job/{job.pk}/change/", {"prompt": "changed", "status": "succeeded"})
    job.refresh_from_db()
    assert response.status_code == 403 or job.prompt != "changed"
    assert job.status == Job.Status.QUEUED


# --- what the lists show -------------------------------------------------------------------


def test_money_is_shown_with_four_decimals(admin_client, user, instance):
    batch = make_batch(user, count=2)
    Job.objects.filter(batch=batch).update(cost_usd=Decimal("0.3038"), status=Job.Status.SUCCEEDED)

    batches = admin_client.get("/admin/jobs/batchrun/").content.decode()
    jobs = admin_client.get("/admin/jobs/job/").content.decode()
    instances = admin_client.get("/admin/gpu_instances/gpuinstance/").content.decode()

    assert "$0.6076" in batches and "0.607600" not in batches
    assert "$0.3038" in jobs
    assert "$1.2000" in instances


def test_jobs_are_named_by_batch_input_and_seed(admin_client, user):
    batch = make_batch(user, name="harbour clips", count=1, params={"num_frames": 17, "seed": 42})
    job = batch.jobs.get()

    assert str(job) == "harbour clips · img0.png · seed 42"
    listing = admin_client.get("/admin/jobs/job/").content.decode()
    assert "harbour clips · img0.png · seed 42" in listing
    assert str(job.uuid) not in listing.split('id="result_list"')[1].split("</table>")[0].replace(
        f"/{job.pk}/", "")


def test_batches_are_called_batches_in_the_admin(admin_client, user):
    make_batch(user)
    index = admin_client.get("/admin/").content.decode()
    listing = admin_client.get("/admin/jobs/batchrun/").content.decode()

    assert "Batches" in index and "Batch runs" not in index and "Batch run" not in listing
    assert "GPU instances" in index and "Gpu instances" not in index


def test_an_instance_not_rented_yet_says_so_instead_of_unknown_values():
    instance = GpuInstance(pk=7, label="genhub", state="provisioning")
    assert str(instance) == "instance 7 (not rented yet, provisioning)"
    assert "?" not in str(instance) and "unknown" not in str(instance)
