"""ZIP uploads: `jobs.intake.expand_archives`, its limits, and the API using it."""

import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs.intake import UploadedFile, expand_archives
from jobs.models import Job
from providers.simulators.media import make_image
from tests.web.helpers import zip_bytes

PNG = make_image()


def zip_of(members: dict[str, bytes], name="shots.zip", **kwargs) -> UploadedFile:
    return UploadedFile(name, zip_bytes(members, **kwargs))


def test_a_zip_is_replaced_by_the_images_inside_it_named_by_their_base_name():
    files, errors = expand_archives([UploadedFile("loose.png", PNG), zip_of({"a/b/one.png": PNG, "two.png": PNG})])

    assert errors == []
    assert [f.name for f in files] == ["loose.png", "one.png", "two.png"]
    assert files[1].data == PNG


def test_directories_macos_metadata_and_hidden_files_are_skipped():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("shots/", b"")
        zf.writestr("shots/one.png", PNG)
        zf.writestr("__MACOSX/shots/._one.png", b"resource fork")
        zf.writestr("shots/.DS_Store", b"finder")
        zf.writestr(".hidden/two.png", PNG)
        zf.writestr("shots/Thumbs.db", b"windows")

    files, errors = expand_archives([UploadedFile("shots.zip", buffer.getvalue())])

    assert errors == [] and [f.name for f in files] == ["one.png"]


def test_two_members_with_one_name_in_different_folders_are_reported_with_both_paths():
    files, errors = expand_archives([zip_of({"day1/cat.png": PNG, "day2/cat.png": PNG})])

    assert [f.name for f in files] == ["cat.png"]  # the first is kept; the clash is reported once
    assert errors == [{"field": "images", "item": "cat.png", "message":
                       "two files are named cat.png (shots.zip: day1/cat.png; shots.zip: day2/cat.png); "
                       "names pair files with rows, so rename one"}]


def test_a_member_named_like_a_directly_uploaded_file_is_reported():
    _, errors = expand_archives([UploadedFile("cat.png", PNG), zip_of({"cat.png": PNG})])

    assert "(uploaded directly; shots.zip: cat.png)" in errors[0]["message"]


def test_a_file_that_is_not_a_zip_is_reported_against_the_archive():
    files, errors = expand_archives([UploadedFile("shots.zip", b"not a zip at all")])

    assert files == [] and errors == [{"field": "images", "item": "shots.zip", "message": "not a readable ZIP archive"}]


def test_an_archive_with_nothing_usable_is_reported():
    _, errors = expand_archives([zip_of({"__MACOSX/x": b"", ".DS_Store": b""})])

    assert errors[0]["message"] == "the archive holds no files"


def test_a_nested_archive_is_reported_not_expanded():
    inner = zip_bytes({"one.png": PNG})

    files, errors = expand_archives([zip_of({"inner.zip": inner, "two.png": PNG})])

    assert [f.name for f in files] == ["two.png"]
    assert errors[0]["item"] == "inner.zip" and "nested archives are not expanded" in errors[0]["message"]


def test_a_member_over_the_image_size_limit_is_refused_unread(settings):
    settings.GENHUB_MAX_IMAGE_BYTES = 1000

    files, errors = expand_archives([zip_of({"big.png": b"x" * 1001, "small.png": b"y" * 10})])

    assert [f.name for f in files] == ["small.png"]
    assert errors[0]["item"] == "big.png" and "too large: 1001 bytes" in errors[0]["message"]


def test_a_zip_bomb_is_refused_by_its_compression_ratio():
    files, errors = expand_archives([zip_of({"bomb.png": bytes(5 * 1024 * 1024)})])

    assert files == []
    assert errors[0]["item"] == "bomb.png" and "looks like a zip bomb" in errors[0]["message"]


def test_archives_that_together_unpack_to_too_much_are_refused(settings):
    settings.GENHUB_MAX_ARCHIVE_BYTES = len(PNG) * 3

    files, errors = expand_archives([zip_of({"a.png": PNG, "b.png": PNG}, name="one.zip"),
                                     zip_of({"c.png": PNG, "d.png": PNG}, name="two.zip")])

    assert [f.name for f in files] == ["a.png", "b.png"]
    assert errors[0]["item"] == "two.zip" and "all archives of a batch may hold" in errors[0]["message"]


def test_an_archive_with_more_members_than_a_batch_may_have_is_refused(settings):
    settings.GENHUB_MAX_BATCH_ITEMS = 2

    files, errors = expand_archives([zip_of({f"{n}.png": PNG for n in range(3)})])

    assert files == [] and "holds 3 files, the limit is 2" in errors[0]["message"]


def test_an_encrypted_member_is_reported():
    data = bytearray(zip_bytes({"secret.png": PNG}, compression=zipfile.ZIP_STORED))
    # Set the "encrypted" flag in the local header and the central directory, as a password tool would.
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        position = data.index(signature) + offset
        data[position] |= 0x1

    _, errors = expand_archives([UploadedFile("locked.zip", bytes(data))])

    assert "is encrypted" in errors[0]["message"]


# --- the API uses it too -------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_api_accepts_a_zip_of_images(api):
    upload = SimpleUploadedFile("shots.zip", zip_bytes({"x/one.png": PNG, "two.png": PNG}))

    response = api.post("/api/batches/", {"provider": "fal", "prompt": "waves", "images": [upload]},
                        format="multipart")

    assert response.status_code == 201, response.content
    assert [j["input_name"] for j in response.json()["jobs"]] == ["one.png", "two.png"]


@pytest.mark.django_db
def test_the_api_reports_archive_problems_together_with_the_others(api):
    upload = SimpleUploadedFile("shots.zip", b"garbage")

    response = api.post("/api/batches/", {"provider": "fal", "prompt": "waves", "images": [upload],
                                          "params": json.dumps({"fps": 99})}, format="multipart")

    assert response.status_code == 400
    fields = [(e["field"], e.get("item")) for e in response.json()["errors"]]
    assert ("images", "shots.zip") in fields and ("params.fps", None) in fields
    assert Job.objects.count() == 0


def test_a_member_of_a_mebibyte_or_less_still_answers_to_the_compression_ratio():
    # 1,000 of these in a 1.1 MB ZIP once took a web worker to 1.1 GB: small members had no ratio check.
    files, errors = expand_archives([zip_of({f"z{n}.png": bytes(1024 * 1024) for n in range(3)})])

    assert files == []
    assert [e["item"] for e in errors] == ["z0.png", "z1.png", "z2.png"]
    assert all("looks like a zip bomb" in e["message"] for e in errors)


def test_a_member_whose_header_understates_its_size_is_stopped_at_the_limit(settings):
    settings.GENHUB_MAX_IMAGE_BYTES, settings.GENHUB_MAX_ARCHIVE_RATIO = 50_000, 10**6
    data = bytearray(zip_bytes({"liar.png": bytes(400_000)}))
    # Declare 1,000 bytes unpacked in both headers; the deflated stream still holds 400,000.
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        position = data.index(signature) + offset
        data[position:position + 4] = (1000).to_bytes(4, "little")

    files, errors = expand_archives([UploadedFile("liar.zip", bytes(data))])

    assert files == [] and errors[0]["item"] == "liar.png"
