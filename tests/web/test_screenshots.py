"""Every page in each of its states, in Chromium at a desktop and a phone width, saved for people to look
at (test-artifacts/screenshots/, git-ignored). Each shot also checks what a look would catch: nothing
wider than the screen, badges that stay badges, cards that do not stretch, selects that are not clipped."""

import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone
from playwright.sync_api import expect

from gpu_instances.models import GpuInstance, InstanceEvent
from jobs.models import Alert, Job
from providers.simulators.media import make_image
from tests.jobs.factories import make_batch
from tests.web.browser_steps import form_ready, log_in
from tests.web.helpers import finish_job

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
WIDTHS = {"wide": (1280, 900), "narrow": (390, 844)}
S = Job.Status


def shoot(page, name: str) -> None:
    """Both widths: the page fits the screen at each, then a full-page shot of it."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(50)  # one layout pass after the resize (not a wait for the app)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name} at {width}px is {overflow}px wider than the screen"
        for badge in page.locator(".badge:visible").all():
            box = badge.bounding_box()
            assert box["height"] < 2.2 * 16, f"{name} at {width}px: a badge became a blob ({box})"
        page.screenshot(path=SHOTS / f"{name}-{label}.png", full_page=True)


def select_fits(select) -> bool:
    """The chosen option's text, in the select's own font, fits beside its arrow (a select never scrolls,
    so its scrollWidth cannot tell)."""
    return select.evaluate("""(select) => {
        const style = getComputedStyle(select);
        const context = document.createElement("canvas").getContext("2d");
        context.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
        const text = context.measureText(select.options[select.selectedIndex].text).width;
        const padding = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
        return text + padding + 20 <= select.clientWidth;  // 20 px: the drop-down arrow
    }""")


def gpu(state, *, age_seconds=0, **fields) -> GpuInstance:
    fields = {"vast_id": 31337, "gpu_name": "H100 SXM", "dph_usd": Decimal("1.1208"), **fields}
    made = GpuInstance.objects.create(label="genhub", state=state, **fields)
    GpuInstance.objects.filter(pk=made.pk).update(created_at=timezone.now() - timedelta(seconds=age_seconds))
    made.refresh_from_db()
    return made


def past_boots():
    start = timezone.now() - timedelta(days=1)
    for number, seconds in enumerate((140, 150, 170)):
        past = gpu(GpuInstance.State.DESTROYED, vast_id=900 + number, end_reason="operator: done")
        GpuInstance.objects.filter(pk=past.pk).update(created_at=start, ready_at=start + timedelta(seconds=seconds),
                                                      destroyed_at=start + timedelta(hours=2))


def portrait(job: Job) -> None:
    """A tall input picture, the kind that once stretched its row of cards."""
    job.input_image.save(f"portrait-{job.pk}.png", ContentFile(make_image(width=240, height=420)), save=True)


def test_logged_out_and_empty_pages(page, user):
    page.goto("/accounts/login/")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    shoot(page, "01-login")

    log_in(page)
    expect(page.get_by_text("No batches yet")).to_be_visible()
    shoot(page, "02-batches-empty")

    page.goto("/instance/")
    expect(page.get_by_text("No GPU is rented right now.")).to_be_visible()
    shoot(page, "03-instance-none")


def test_the_new_batch_form_for_fal_and_for_the_gpu(page, user):
    log_in(page)
    page.goto("/batches/new/")
    form_ready(page)
    expect(page.locator("#field-fallback")).to_be_hidden()  # nothing to fall back from on fal.ai
    resolution = page.get_by_label("Resolution")
    expect(resolution.locator("option").first).to_have_text("Preset (480p)")  # fal's default, in the select
    for width, height in WIDTHS.values():
        page.set_viewport_size({"width": width, "height": height})
        for select in (resolution, page.get_by_label("Preset")):
            assert select_fits(select), f"a select is clipped at {width}px: {select}"
    shoot(page, "04-new-batch-fal")

    page.get_by_label("vast.ai GPU").check()
    expect(page.locator("#field-fallback")).to_be_visible()
    shoot(page, "05-new-batch-vastai")


def test_a_gpu_batch_while_the_gpu_boots_and_then_with_a_job_next_on_the_gpu(page, user):
    past_boots()
    batch = make_batch(user, provider="vastai", count=4, name="Harbour at dawn, four takes")
    Job.objects.update(status=S.WAITING_FOR_GPU)
    booting = gpu(GpuInstance.State.LOADING, age_seconds=48)
    log_in(page)
    page.goto(f"/batches/{batch.uuid}/")
    note = page.locator("#gpu-activity")
    expect(note).to_contain_text("Booting the GPU (vast #31337, H100 SXM)")
    expect(note).to_contain_text("typically 2 min 30 s")
    shoot(page, "06-batch-gpu-booting")

    # The GPU becomes ready and takes two jobs: one generates, the other waits inside SwarmUI.
    GpuInstance.objects.filter(pk=booting.pk).update(state=GpuInstance.State.READY, ready_at=timezone.now(),
                                                     base_url="http://203.0.113.9:40123")
    first, second, *rest = batch.jobs.all()
    Job.objects.filter(pk__in=[job.pk for job in rest]).update(status=S.QUEUED)
    now = timezone.now()
    Job.objects.filter(pk=first.pk).update(status=S.RUNNING, instance=booting, progress=0.35, attempts=1,
                                           started_at=now - timedelta(seconds=20))
    Job.objects.filter(pk=second.pk).update(status=S.RUNNING, instance=booting, progress=0.0, attempts=1,
                                            started_at=now - timedelta(seconds=19))
    # The live update (batch.js, every 2 s) — the page is not reloaded.
    expect(page.locator(f"#job-{second.uuid} [data-field=status]")).to_have_text("Next on the GPU")
    expect(page.locator(f"#job-{first.uuid} [data-field=status]")).to_have_text("Running")
    expect(page.locator(f"#job-{second.uuid} [data-field=progress-text]")).to_be_hidden()
    expect(note).to_be_hidden()
    expect(page.locator(".summary .count:visible")).to_have_text(["2 queued", "1 running", "1 next on the GPU"])
    expect(page.locator("body")).not_to_contain_text("203.0.113.9")
    shoot(page, "07-batch-next-on-gpu")


def test_a_finished_batch_with_a_portrait_image_and_the_list(page, user):
    batch = make_batch(user, provider="fal", count=3, name="A rather long batch name that wraps on a phone")
    jobs = list(batch.jobs.all())
    portrait(jobs[1])
    Job.objects.filter(pk=jobs[1].pk).update(prompt="the camera rises slowly over the harbour wall while gulls "
                                             "circle, fishing boats rock on the swell and the light turns gold")
    for job in jobs:
        finish_job(job, cost="0.0425")
    make_batch(user, provider="vastai", count=2, name="Second batch")
    log_in(page)
    page.goto(f"/batches/{batch.uuid}/")
    expect(page.locator('[data-summary="status"]')).to_have_text("Succeeded")
    page.set_viewport_size({"width": 1280, "height": 900})
    tall, *others = sorted((card.bounding_box()["height"] for card in page.locator(".card").all()), reverse=True)
    assert all(height < tall - 10 for height in others), "cards in a row stretch to the tallest one"
    expect(page.locator(".summary .count:visible")).to_have_text(["3 succeeded"])  # only what counts something
    shoot(page, "08-batch-finished")

    page.goto("/")
    shoot(page, "09-batches-list")


def test_the_instance_panel_and_the_alerts_banner(page, user):
    dead = gpu(GpuInstance.State.DESTROYED, vast_id=11, gpu_name="A100 SXM4",
               end_reason="unhealthy: 3 failed probes over 70s (timeout)", age_seconds=4000)
    InstanceEvent.objects.create(instance=dead, kind="health", message="health probe failed (1): timeout")
    active = gpu(GpuInstance.State.READY, age_seconds=1900, last_health_ok=True, health_failures=0,
                 last_health_at=timezone.now(), ready_at=timezone.now() - timedelta(minutes=28))
    InstanceEvent.objects.create(instance=active, kind="state", from_state="loading", to_state="ready",
                                 message="SwarmUI ready after 152s")
    Alert.objects.create(kind=Alert.Kind.INSTANCE_DOWN, key="instance_down",
                         message="no GPU has been ready for 17 min while 3 vast.ai jobs wait")
    log_in(page)
    banner = page.get_by_role("region", name="Open alerts")
    expect(banner).to_contain_text("GPU unavailable")
    shoot(page, "10-alerts-banner")

    page.goto("/instance/")
    facts = page.locator("#active-title + .facts-grid")
    expect(facts).to_contain_text("healthy, checked just now")
    expect(facts).to_contain_text("$1.1208/h")
    expect(page.locator(".history")).to_contain_text("$1.1208/h")
    assert not re.search(r"\$\d+\.\d{3}/h", page.locator("main").inner_text()), "one price format everywhere"
    shoot(page, "11-instance-panel")
