"""The admin's list tables fit a 1280 px screen (checked in real Chromium, not by counting columns)."""

import pytest
from django.contrib.auth import get_user_model

from gpu_instances.models import GpuInstance, InstanceEvent
from jobs.models import Alert, Job
from tests.jobs.factories import make_batch

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LISTS = ["/admin/jobs/batchrun/", "/admin/jobs/job/", "/admin/gpu_instances/gpuinstance/", "/admin/jobs/alert/",
         "/admin/gpu_instances/instanceevent/"]


def test_every_admin_list_fits_1280_pixels(page, user, screenshot):
    get_user_model().objects.create_superuser("root", password="root-password-1")
    batch = make_batch(user, name="a batch with a fairly long name for the list", count=2, provider="vastai")
    instance = GpuInstance.objects.create(label="genhub", vast_id=123456789, state="ready", gpu_name="H100 NVL",
                                          dph_usd="1.1208", base_url="http://127.0.0.1:1")
    Job.objects.filter(batch=batch).update(instance=instance, cost_usd="0.6075", status=Job.Status.SUCCEEDED)
    InstanceEvent.objects.create(instance=instance, kind="state", from_state="loading", to_state="ready",
                                 message="SwarmUI answers with its token; backend running; models listed")
    Alert.objects.create(kind="instance_down", key="instance_down", message="no GPU ready for 15 minutes", batch=batch)

    page.goto("/admin/login/")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill("root-password-1")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/")
    for url in LISTS:
        page.goto(url)
        # The admin puts the table in a scrolling box: a table too wide is cut off there, not on the page.
        widths = page.evaluate("""() => {
            const box = document.querySelector('#changelist .results');
            return {page: document.documentElement.scrollWidth, viewport: window.innerWidth,
                    table: box.scrollWidth, box: box.clientWidth};
        }""")
        screenshot(page, "admin-" + url.strip("/").replace("/", "-"))
        assert widths["page"] <= widths["viewport"] and widths["table"] <= widths["box"], (url, widths)
