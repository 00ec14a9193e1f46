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
