"""The web app in real headless Chromium, against the live server, a real django-q2 cluster and the
simulated vast.ai cloud: what a person does, start to finish."""

import csv
import io
import re
import zipfile

import pytest
from playwright.sync_api import expect

from jobs.alerts import alerts_check
from jobs.models import BatchRun, Job
from providers.simulators.media import make_image
from tests.jobs.factories import make_batch
from tests.web.browser_steps import form_ready, log_in, nav
from tests.web.helpers import finish_job

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROWS = [
    ("harbour.png", "boats rock gently in the harbour", "", "101"),
    ("forest.png", "sunlight moves through the trees", "people", "202"),
    ("city.png", "traffic flows at dusk", "", "303"),
]


def write_images(folder, names):
    paths = []
    for number, name in enumerate(names):
        path = folder / name
        path.write_bytes(make_image(color=(40 + number * 70, 120, 200 - number * 60)))
        paths.append(path)
    return paths


def drop_file(page, selector, name, text, mime):
    """What the browser does when a file is dragged from the desktop onto the element."""
    page.evaluate("""([selector, name, text, mime]) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([text], name, {type: mime}));
        document.querySelector(selector).dispatchEvent(
            new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""", [selector, name, text, mime])


def assert_fits_a_narrow_screen(page):
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a narrow screen"


@pytest.mark.cluster
def test_three_images_paired_by_csv_become_videos_on_the_simulated_gpu(page, user, vast_sim_factory, qcluster,
                                                                       settings, tmp_path, screenshot):
    settings.GENHUB_SIMULATED = True
    vast_sim_factory(swarmui_generation_seconds=0.3)
    qcluster(GENHUB_RECONCILE_INTERVAL="0.2")  # boots while the user fills in the form
    images = write_images(tmp_path, [name for name, *_ in ROWS])
    rows_csv = tmp_path / "pairs.csv"
    rows_csv.write_text("file,prompt,negative_prompt,seed\n" + "".join(",".join(row) + "\n" for row in ROWS))

    page.goto("/")
    screenshot(page, "01-login")
    log_in(page)
    expect(page.get_by_text("Simulated cloud.")).to_be_visible()
    screenshot(page, "02-batches-empty")

    nav(page, "New batch").click()
    form_ready(page)
    page.get_by_label("Images or ZIP archives of images").set_input_files(images)
    expect(page.locator("#file-list li")).to_have_count(3)
    page.get_by_label("One row per image, from a CSV/TSV").check()
    page.get_by_label("CSV/TSV file").set_input_files(rows_csv)
    page.get_by_label("vast.ai GPU").check()
    page.get_by_label("Frames", exact=True).fill("17")
    page.get_by_label("Batch name").fill("Three places")

    page.get_by_role("button", name="Preview pairing and estimate").click()
    dry_run = page.locator(".dry-run")
    expect(dry_run).to_contain_text("Dry run: 3 items from 3 images")
    preview = dry_run.locator("table.preview tbody tr")
    expect(preview).to_have_count(3)
    for row, (name, prompt, _negative, seed) in zip(preview.all(), ROWS, strict=True):
        expect(row).to_contain_text(name)
        expect(row).to_contain_text(prompt)
        expect(row).to_contain_text(seed)
    expect(dry_run.locator("tr.chosen")).to_contain_text("vast.ai GPU")
    assert BatchRun.objects.count() == 0
    screenshot(page, "03-new-batch-dry-run")

    dry_run.get_by_role("button", name="Create 3 jobs on vast.ai GPU").click()
    expect(page).to_have_url(re.compile(r"/batches/[0-9a-f-]{36}/$"))
    expect(page.locator(".message")).to_contain_text("Batch created: 3 jobs on vast.ai GPU.")
    page.evaluate("window.stillTheSamePage = true")  # gone if anything reloads the page
    screenshot(page, "04a-batch-just-created")

    expect(page.locator(".card .badge.status-succeeded")).to_have_count(3, timeout=120_000)
    expect(page.locator('[data-summary="status"]')).to_have_text("Succeeded")
    expect(page.locator('[data-field="batch-progress-text"]')).to_have_text("100%")
    assert page.evaluate("window.stillTheSamePage") is True, "the cards must update without a reload"
    expect(page.get_by_role("link", name="Download finished videos (ZIP)")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel the batch")).to_be_hidden()
    page.wait_for_timeout(1000)  # Chromium's video controls show a spinner for their first moment
    screenshot(page, "04-batch-finished")

    video = page.locator(".card video").first
    played = video.evaluate("""async (video) => {
        video.muted = true;
        await video.play();
        await new Promise((resolve) => setTimeout(resolve, 600));
        return {time: video.currentTime, width: video.videoWidth, error: video.error && video.error.code};
    }""")
    assert played["error"] is None and played["width"] > 0 and played["time"] > 0, played

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download finished videos (ZIP)").click()
    download = download_info.value
    assert download.suggested_filename.startswith("three-places-") and download.suggested_filename.endswith(".zip")
    archive = zipfile.ZipFile(download.path())
    manifest = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    jobs = {job.input_name: job for job in Job.objects.all()}
    assert [(r["input_file"], r["prompt"], r["negative_prompt"], r["seed"], r["status"]) for r in manifest] == [
        (name, prompt, negative, seed, "succeeded") for name, prompt, negative, seed in ROWS]
    for row in manifest:
        assert row["output_file"] in archive.namelist() and archive.getinfo(row["output_file"]).file_size > 0
        assert row["cost_usd"] == str(jobs[row["input_file"]].cost_usd)

    nav(page, "Batches").click()
    listed = page.locator("table.batches tbody tr")
    expect(listed).to_have_count(1)
    expect(listed).to_contain_text("Three places")
    expect(listed).to_contain_text("vast.ai GPU")
    expect(listed).to_contain_text("3 succeeded")
    expect(listed).to_contain_text("100%")
    screenshot(page, "05-batches-list")

    nav(page, "GPU instance").click()
    expect(page.locator("#active-title + .facts-grid")).to_contain_text("ready")
    screenshot(page, "06-gpu-instance")

    page.set_viewport_size({"width": 390, "height": 844})
    for path, name in (("/", "07-narrow-batches-list"), (page.url, "08-narrow-gpu-instance"),
                       ("/batches/new/", "09-narrow-new-batch")):
        page.goto(path)
        assert_fits_a_narrow_screen(page)
        screenshot(page, name)
    page.goto(f"/batches/{BatchRun.objects.get().uuid}/")
    assert_fits_a_narrow_screen(page)
    screenshot(page, "10-narrow-batch")


def test_files_chosen_before_the_page_script_starts_are_listed_and_sent(page, user, tmp_path):
    """The flaky-test race made certain: the script is held back until after the files are chosen."""
    images = write_images(tmp_path, ["early-1.png", "early-2.png"])
    log_in(page)
    held = []
    page.route("**/static/genhub/new-batch.js", lambda route: held.append(route))  # answered below
    page.goto("/batches/new/", wait_until="commit")
    page.get_by_label("Images or ZIP archives of images").set_input_files(images)  # the parser is past it
    assert page.locator("#file-list li").count() == 0 and not page.locator("#batch-form[data-ready]").count()
    held[0].continue_()

    form_ready(page)
    expect(page.locator("#file-list li")).to_have_count(2)
    expect(page.locator("#file-list")).to_contain_text("2 files chosen")
    page.get_by_label("Prompt", exact=True).fill("the camera slowly orbits")
    page.get_by_role("button", name="Create batch").click()
    expect(page).to_have_url(re.compile(r"/batches/[0-9a-f-]{36}/$"))
    assert sorted(job.input_name for job in Job.objects.all()) == ["early-1.png", "early-2.png"]


def test_a_bad_file_is_named_next_to_the_images_and_the_chosen_files_stay(page, user, tmp_path, screenshot):
    good, = write_images(tmp_path, ["good.png"])
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"these are meeting notes, not a picture")
    log_in(page)
    page.goto("/batches/new/")
    form_ready(page)

    page.get_by_label("Images or ZIP archives of images").set_input_files([good])
    drop_file(page, "[data-dropzone]", "notes.png", bad.read_text(), "image/png")  # adds to the picked one
    expect(page.locator("#file-list li")).to_have_count(2)
    page.get_by_label("Prompt", exact=True).fill("the camera slowly orbits")
    page.get_by_role("button", name="Create batch").click()

    expect(page.locator("#err-images")).to_have_text("notes.png: not an image (PNG, JPEG or WebP expected)")
    expect(page.locator("#field-images")).to_have_class(re.compile(r"\bhas-error\b"))
    expect(page.locator("#file-list li.bad")).to_have_text(re.compile(r"^\?notes.png"))
    expect(page.locator(".error-summary")).to_be_focused()
    expect(page.locator(".error-summary")).to_contain_text("Nothing was created.")
    assert page.locator("#id_images").evaluate("input => input.files.length") == 2, "the chosen files were lost"
    assert BatchRun.objects.count() == 0
    screenshot(page, "11-new-batch-bad-file")

    page.get_by_role("button", name="Remove notes.png").click()
    page.get_by_role("button", name="Create batch").click()
    expect(page).to_have_url(re.compile(r"/batches/[0-9a-f-]{36}/$"))
    assert [job.input_name for job in Job.objects.all()] == ["good.png"]


def test_the_new_batch_form_is_reachable_with_the_keyboard_alone(page, user):
    log_in(page)
    page.goto("/batches/new/")
    form_ready(page)
    # The fallback policy is there for GPU batches only; chosen without moving the keyboard focus.
    page.evaluate("document.querySelector('input[name=provider][value=vastai]').click()")

    reached = set()
    for _ in range(45):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()"))
    assert {"id_images", "id_name", "id_pairing_0", "id_prompt", "id_provider_1", "id_preset", "id_num_frames",
            "id_cfg", "id_negative_prompt", "id_budget_usd", "id_fallback_0", "id_fallback_after",
            "Preview pairing and estimate", "Create batch"} <= reached

    page.keyboard.press("Shift+Tab")  # back from wherever it got to; now choose a mode with the arrow keys
    page.focus("#id_pairing_0")
    page.keyboard.press("ArrowDown")
    expect(page.locator("#id_pairing_1")).to_be_checked()
    expect(page.get_by_label("CSV/TSV file")).to_be_visible()

    page.focus("#id_fallback_0")  # the fallback policy: its number's label says what it counts
    page.keyboard.press("ArrowDown")
    expect(page.locator("#id_fallback_1")).to_be_checked()
    expect(page.get_by_label("N: minutes the GPU may be unavailable before the waiting jobs move")).to_be_visible()
    page.keyboard.press("ArrowDown")
    expect(page.get_by_label("K: failed attempts on the GPU before a job moves")).to_be_visible()


def test_one_job_is_retried_and_another_cancelled_from_their_cards(page, user, screenshot):
    batch = make_batch(user, name="Mixed results", count=3)
    done, failed, waiting = batch.jobs.all()
    finish_job(done, cost="0.0425")
    finish_job(failed, status=Job.Status.FAILED, error="SwarmUI: CUDA out of memory while decoding the video")
    log_in(page)
    page.goto(f"/batches/{batch.uuid}/")
    expect(page.locator(f"#job-{failed.uuid}")).to_contain_text("CUDA out of memory")
    screenshot(page, "12-batch-with-a-failure")

    page.locator(f"#job-{failed.uuid}").get_by_role("button", name="Retry").click()
    expect(page.locator(".message")).to_contain_text("Retrying img1.png")
    expect(page.locator(f"#job-{failed.uuid} [data-field=status]")).to_have_text("Queued")
    page.locator(f"#job-{waiting.uuid}").get_by_role("button", name="Cancel").click()
    expect(page.locator(f"#job-{waiting.uuid} [data-field=status]")).to_have_text("Cancelled")
    assert list(batch.jobs.values_list("status", flat=True)) == ["succeeded", "queued", "cancelled"]


@pytest.mark.cluster
def test_a_tiny_budget_pauses_a_fal_batch_and_raising_it_on_the_page_lets_it_finish(page, user, fal_sim, qcluster,
                                                                                   settings, tmp_path, screenshot):
    settings.GENHUB_SIMULATED = True
    qcluster(FAL_POLL_INTERVAL="0.2")
    images = write_images(tmp_path, ["dunes.png", "glacier.png", "meadow.png"])
    log_in(page)
    nav(page, "New batch").click()
    form_ready(page)
    page.get_by_label("Images or ZIP archives of images").set_input_files(images)
    page.get_by_label("Prompt", exact=True).fill("clouds drift over the landscape")
    page.get_by_label("Frames", exact=True).fill("17")  # $0.0425 a clip on fal: $0.05 pays for one of three
    page.get_by_label("Batch name").fill("Landscapes")
    page.get_by_label("Budget (USD)").fill("0.05")
    page.get_by_role("heading", name="4. Spending").evaluate("heading => heading.scrollIntoView()")
    screenshot(page, "13-new-batch-spending", full_page=False)

    page.get_by_role("button", name="Preview pairing and estimate").click()
    warning = page.get_by_role("alert").filter(has_text="Over budget")
    expect(warning).to_contain_text("over this batch's budget ($0.05): about 1 of 3 clips will run")
    warning.scroll_into_view_if_needed()
    screenshot(page, "14-new-batch-over-budget", full_page=False)

    page.locator(".dry-run").get_by_role("button", name="Create 3 jobs on fal.ai").click()
    expect(page).to_have_url(re.compile(r"/batches/[0-9a-f-]{36}/$"))
    cards = page.locator(".card")
    expect(cards.locator(".badge.status-paused")).to_have_count(2, timeout=60_000)
    expect(cards.locator(".badge.status-succeeded")).to_have_count(1, timeout=60_000)
    for paused in cards.filter(has=page.locator(".badge.status-paused")).all():
        expect(paused.locator('[data-field="paused"]')).to_be_visible()
        expect(paused.locator('[data-field="paused"]')).to_contain_text("batch budget $0.05 reached")
    expect(page.locator('[data-summary="status"]')).to_have_text("Paused")
    expect(page.get_by_text("Some jobs are paused")).to_be_visible()
    expect(page.locator("#batch-costs")).to_contain_text("Budget $0.05, of which $0.0425 is spent.")
    screenshot(page, "15-batch-paused-by-its-budget")

    alerts_check()  # what the scheduled check does every minute: $0.0425 of $0.05 is over 80 %
    batch_url = page.url
    nav(page, "Batches").click()
    listed = page.locator("table.batches tbody tr")
    expect(listed).to_contain_text("Paused")
    expect(listed).to_contain_text("2 paused")
    expect(listed).to_contain_text("of $0.05 budget")
    banner = page.get_by_role("region", name="Open alerts")
    expect(banner).to_contain_text("Budget nearly spent: batch “Landscapes”: $0.0425 spent of $0.05 (85%)")
    screenshot(page, "16-batches-list-with-an-alert")
    banner.get_by_role("link", name="Open the batch").click()
    expect(page).to_have_url(batch_url)
    expect(page.get_by_role("region", name="Alerts about this batch")).to_contain_text("$0.0425 spent of $0.05")
    expect(page.get_by_role("region", name="Open alerts")).to_have_count(0)  # shown in the page instead
    screenshot(page, "17-batch-with-its-own-alert", full_page=False)

    page.get_by_label("New budget (USD)").fill("-1")
    page.get_by_role("button", name="Change the budget").click()
    expect(page.locator("#err-budget_usd")).to_have_text("must be an amount in USD, at least 0 (e.g. 25 or 12.50)")
    expect(page.get_by_label("New budget (USD)")).to_be_focused()
    screenshot(page, "18-batch-budget-error", full_page=False)

    page.get_by_label("New budget (USD)").fill("1")
    page.get_by_role("button", name="Change the budget").click()
    expect(page.locator(".message")).to_contain_text(
        "Budget set to $1.00. 2 paused jobs start again as far as it allows.")
    expect(cards.locator(".badge.status-succeeded")).to_have_count(3, timeout=60_000)
    expect(page.locator('[data-summary="status"]')).to_have_text("Succeeded")
    expect(cards.locator('[data-field="paused"]:visible')).to_have_count(0)
    # fal's three clips against the GPU's estimate for them: the page says what fal cost extra.
    expect(page.locator('[data-cost="actual"]')).to_have_text("$0.1275")
    expect(page.locator('[data-cost="saving"]')).to_have_text(re.compile(r"^cost \$0\.\d{4} more$"))
    alerts_check()  # $0.1275 of $1.00: the warning is resolved
    page.reload()
    expect(page.get_by_role("region", name="Alerts about this batch")).to_have_count(0)
    page.wait_for_timeout(1000)  # Chromium's video controls show a spinner for their first moment
    screenshot(page, "19-batch-finished-after-raising-the-budget")
    assert set(BatchRun.objects.get().jobs.values_list("status", flat=True)) == {Job.Status.SUCCEEDED}

    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    assert_fits_a_narrow_screen(page)
    screenshot(page, "20-narrow-batch-with-costs")


def test_the_batch_page_shows_the_eta_live_and_takes_a_deadline(page, user, screenshot):
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    from gpu_instances.models import GpuInstance

    instance = GpuInstance.objects.create(label="genhub", state="ready", ready_at=timezone.now(),
                                          dph_usd=Decimal("1.00"))
    done = make_batch(user, provider="vastai", count=5)
    done.jobs.update(status="succeeded", generation_seconds=30.0, instance=instance, finished_at=timezone.now())
    batch = make_batch(user, provider="vastai", count=4)
    log_in(page)
    page.goto(f"/batches/{batch.uuid}/")
    plan = page.get_by_role("region", name="When it will be done")
    expect(plan).to_contain_text("Should be done at about")
    expect(plan).to_contain_text("4.0 clip(s) on the GPU at 30.0 s per clip measured")
    expect(plan).to_contain_text("No deadline: every job waits for the GPU.")

    page.get_by_label("Finish by (ISO 8601 with timezone)").fill("tomorrow morning")
    page.get_by_role("button", name="Set a deadline").click()
    expect(page.locator("#err-deadline")).to_contain_text("must be an ISO 8601 time with a timezone")
    expect(page.get_by_label("Finish by (ISO 8601 with timezone)")).to_be_focused()

    due = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)
    page.get_by_label("Finish by (ISO 8601 with timezone)").fill(due.isoformat())
    page.get_by_role("button", name="Set a deadline").click()
    expect(page.locator(".message")).to_contain_text("Deadline set")
    expect(plan).to_contain_text("Deadline")
    assert BatchRun.objects.get(pk=batch.pk).deadline == due
    screenshot(page, "19-batch-eta-and-deadline", full_page=False)

    batch.jobs.update(status="succeeded", finished_at=timezone.now())  # the page learns it from the API
    expect(plan.get_by_text("Nothing is left to do.")).to_be_visible(timeout=15_000)
    expect(plan.locator('[data-plan="eta"]')).to_be_hidden()
