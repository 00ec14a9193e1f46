"""Speed history for people: the instance panel and the admin show seconds per clip per machine and GPU model."""

from decimal import Decimal

import pytest
from django.utils import timezone

from gpu_instances import speed
from gpu_instances.models import GpuInstance, SpeedSample
from tests.web.helpers import text_of

pytestmark = pytest.mark.django_db
SMALL = {"num_frames": 17, "width": 256, "height": 256, "steps": 4}
STANDARD = {"num_frames": 81, "width": 832, "height": 480, "steps": 4}
ADDRESS = "http://203.0.113.9:41234"


@pytest.fixture
def rented():
    """The active H100 SXM on machine 7 (qualified), an earlier one on machine 7 and one on machine 8."""
    earlier = GpuInstance.objects.create(label="old-1", machine_id=7, gpu_name="H100 SXM", state="destroyed")
    other = GpuInstance.objects.create(label="old-2", machine_id=8, gpu_name="H100 SXM", state="destroyed")
    active = GpuInstance.objects.create(vast_id=4242, label="genhub", machine_id=7, gpu_name="H100 SXM",
                                        dph_usd=Decimal("2.0"), state="ready", base_url=ADDRESS,
                                        qualification="passed", qualified_at=timezone.now())
    for seconds in (50.0, 60.0, 70.0):
        speed.record_sample(instance=earlier, params=STANDARD, seconds=seconds, source="job")
    speed.record_sample(instance=active, params=SMALL, seconds=5.5, source="selftest")
    for seconds in (40.0, 42.0):
        speed.record_sample(instance=other, params=STANDARD, seconds=seconds, source="job")
    return active


def test_the_instance_panel_shows_its_qualification_and_the_speed_of_its_machine_and_model(web, rented):
    page = web.get("/instance/").content.decode()
    active = text_of(page.split('id="speed-title"')[0])

    assert "Qualification passed its self-test" in active
    machine, model = active.split("Speed of this machine")[1].split("Speed of all H100 SXM machines")
    # machine 7: three jobs at 50/60/70 s and the self-test; the model adds machine 8's two jobs.
    assert "H100 SXM 17 frames 256×256 × 4 steps 5.5 5.5–5.5 1 0" in machine
    assert "H100 SXM 81 frames 832×480 × 4 steps 60.0 55.0–65.0 3 3" in machine
    assert "81 frames 832×480 × 4 steps 50.0 42.0–60.0 5 5" in model
    assert "By GPU model" in text_of(page.split('id="speed-title"')[1])
    assert ADDRESS not in page and "203.0.113.9" not in page  # non-staff never see the address


def test_the_panel_says_when_an_instance_is_still_running_its_selftest(web, rented):
    GpuInstance.objects.filter(pk=rented.pk).update(qualification="", qualified_at=None)

    page = text_of(web.get("/instance/").content.decode())

    assert "Qualification running its self-test: no jobs until it passes" in page


def test_the_admin_summarises_speed_per_gpu_model_and_per_machine(admin_client, rented):
    page = text_of(admin_client.get("/admin/gpu_instances/speedsample/").content.decode())

    by_model, by_machine = page.split("by GPU model")[1].split("by machine")
    assert "H100 SXM 81 frames 832×480 × 4 steps 50.0 42.0–60.0 5 5" in by_model
    assert "H100 SXM 7 81 frames 832×480 × 4 steps 60.0 55.0–65.0 3 3" in by_machine
    assert "H100 SXM 8 81 frames 832×480 × 4 steps 41.0 40.5–41.5 2 2" in by_machine
    assert SpeedSample.objects.count() == 6 and "6 speed samples" in page


def test_the_instance_admin_page_shows_its_machines_and_models_speed(admin_client, rented):
    page = text_of(admin_client.get(f"/admin/gpu_instances/gpuinstance/{rented.pk}/change/").content.decode())

    assert "machine 7 clip median s/clip" in page and "all H100 SXM machines" in page
    assert "81 frames 832×480 × 4 steps 60.0 55.0–65.0 3 3" in page


def test_the_instance_api_says_whether_the_active_instance_has_qualified(client, user, rented):
    client.force_login(user)

    active = client.get("/api/instance/").json()["active"]

    assert active["qualification"] == "passed" and active["qualified_at"]
    assert "swarmui_token" not in active and ADDRESS not in str(active)
