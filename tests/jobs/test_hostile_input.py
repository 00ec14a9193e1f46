"""Hostile and careless input at `POST /api/batches/` (issue 10): always a 400 in the API's JSON shape,
never a 500, nothing stored, and nothing silently changed."""

import io
import json
import struct
import zipfile
import zlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import DataError
from PIL import Image

from jobs import services
from jobs.intake import UploadedFile, build_batch
from jobs.models import BatchRun, Job
from providers.simulators.media import make_image
from tests.jobs.test_api import assert_rejected, image_file, post_batch

pytestmark = pytest.mark.django_db


def stored_files(media_root) -> list:
    return [path for path in media_root.rglob("*") if path.is_file()] if media_root.exists() else []


def assert_nothing_stored(media_root):
    assert BatchRun.objects.count() == 0 and Job.objects.count() == 0
    assert stored_files(media_root) == []


def csv_file(text: str, name="rows.csv", encoding="utf-8") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode(encoding), content_type="text/csv")


# --- 500s instead of 400s ------------------------------------------------------------------


def test_a_csv_row_with_more_fields_than_the_header_and_an_unknown_column_is_a_400(api, media_root):
    rows = "file,prompt,mood\na.png,waves,calm,extra,more\nb.png,rain,grey\n"

    response = post_batch(api, items=rows)

    assert_rejected(response, "items", fragment="row 1")
    messages = " ".join(e["message"] for e in response.json()["errors"])
    assert "more fields than the header" in messages and "mood" in messages
    assert_nothing_stored(media_root)


def test_a_prompt_field_over_the_csv_field_limit_is_a_400(api, media_root):
    rows = "file,prompt\na.png," + "x" * (128 * 1024 + 10) + "\n"

    response = post_batch(api, items=csv_file(rows))

    assert_rejected(response, "items")
    assert_nothing_stored(media_root)


def test_deeply_nested_json_items_are_a_400(api, media_root):
    response = post_batch(api, items="[" * 100_000 + "]" * 100_000)

    assert_rejected(response, "items", fragment="nested")
    assert_nothing_stored(media_root)


def test_deeply_nested_json_params_are_a_400(api, media_root):
    response = post_batch(api, params="[" * 100_000 + "]" * 100_000)

    assert_rejected(response, "params", fragment="nested")


def test_a_deeply_nested_json_body_is_a_400_in_the_api_format(api, media_root):
    body = '{"provider": "fal", "items": ' + "[" * 100_000 + "]" * 100_000 + "}"

    response = api.post("/api/batches/", body, content_type="application/json")

    assert response.status_code == 400, response.content
    assert "nested" in response.json()["message"]
    assert_nothing_stored(media_root)


def test_a_nul_character_in_a_prompt_is_a_400_and_no_input_file_is_left_behind(api, media_root):
    response = post_batch(api, prompt="a cat\x00 turns")

    assert_rejected(response, "prompt", fragment="NUL")
    assert_nothing_stored(media_root)


def test_a_nul_character_in_a_row_prompt_or_the_name_is_a_400(api, media_root):
    response = post_batch(api, name="bad\x00name", items="file,prompt\na.png,one\x00two\n")

    assert_rejected(response, "items", fragment="NUL")
    assert_rejected(response, "name", fragment="NUL")
    assert_nothing_stored(media_root)


@pytest.mark.parametrize("resolution", [[], {}, None, 480])
def test_a_resolution_of_the_wrong_type_is_a_400(api, media_root, resolution):
    response = post_batch(api, params=json.dumps({"resolution": resolution}))

    assert_rejected(response, "params.resolution")
    assert_nothing_stored(media_root)


@pytest.mark.parametrize("preset", [[], {}, 3])
def test_a_json_body_with_a_preset_of_the_wrong_type_is_a_400(api, media_root, preset):
    response = api.post("/api/batches/", {"provider": "fal", "prompt": "p", "preset": preset}, format="json")

    assert_rejected(response, "preset")


def test_more_files_than_allowed_answer_in_the_api_error_format(api, settings, media_root):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 5
    png = make_image()
    files = [SimpleUploadedFile(f"i{n}.png", png, content_type="image/png") for n in range(8)]

    response = post_batch(api, images=files)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert_rejected(response, "images", fragment="too many files in one request")
    assert_nothing_stored(media_root)


def test_a_body_declaring_more_than_the_request_limit_is_refused_unread(api, settings, media_root):
    settings.GENHUB_MAX_UPLOAD_BYTES = 1000

    response = post_batch(api)

    assert_rejected(response, "request", fragment="the limit is 1000 bytes")
    assert_nothing_stored(media_root)


def test_1003_images_with_the_shipped_limits_answer_in_the_api_error_format(api, media_root):
    png = make_image(width=64, height=64)
    files = [SimpleUploadedFile(f"i{n}.png", png, content_type="image/png") for n in range(1003)]

    response = post_batch(api, images=files)

    assert response["Content-Type"] == "application/json"
    assert_rejected(response, "images", fragment="too many files in one request")
    assert_nothing_stored(media_root)


def test_more_images_than_a_batch_may_have_are_stopped_while_they_arrive(api, settings, media_root):
    settings.GENHUB_MAX_BATCH_ITEMS = 3
    png = make_image()
    files = [SimpleUploadedFile(f"i{n}.png", png, content_type="image/png") for n in range(6)]

    response = post_batch(api, images=files)

    assert_rejected(response, "images", fragment="the limit is 3 images")
    assert_nothing_stored(media_root)


# --- silently changed input -----------------------------------------------------------------


def truncated_jpeg() -> bytes:
    data = make_image(width=640, height=480, fmt="JPEG")
    return data[: len(data) // 2]


def png_with_garbage_pixels() -> bytes:
    """Every chunk well-formed with a correct CRC (so verify() passes), but IDAT is noise."""
    data = make_image(width=320, height=240)
    chunks, position = [data[:8]], 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind, body = data[position + 4:position + 8], data[position + 8:position + 8 + length]
        position += 12 + length
        if kind == b"IDAT":
            body = zlib.compress(bytes((n * 131 + 7) % 256 for n in range(5000)))
        chunks.append(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body)))
    return b"".join(chunks)


def jpeg_with_garbage_pixels() -> bytes:
    """Headers and tables intact (verify() passes), the entropy-coded scan replaced by noise."""
    data = make_image(width=320, height=240, fmt="JPEG")
    scan = data.index(b"\xff\xda")
    start = scan + 2 + struct.unpack(">H", data[scan + 2:scan + 4])[0]
    return data[:start] + bytes((n * 131 + 7) % 256 for n in range(len(data) - start - 2)) + b"\xff\xd9"


@pytest.mark.parametrize("name,data", [
    ("half.jpg", truncated_jpeg()), ("noise.png", png_with_garbage_pixels()),
    ("noise.jpg", jpeg_with_garbage_pixels())])
def test_an_image_whose_pixels_do_not_decode_is_a_400_naming_it(api, media_root, name, data):
    response = post_batch(api, images=[image_file("ok.png"), SimpleUploadedFile(name, data)])

    assert_rejected(response, "images", item=name)
    assert_nothing_stored(media_root)


def test_a_latin1_csv_is_a_400_naming_the_line(api, media_root):
    rows = "file,prompt\na.png,the cat\nb.png,café crème\n"

    response = post_batch(api, items=csv_file(rows, encoding="latin-1"))

    assert_rejected(response, "items", fragment="line 3")
    assert "UTF-8" in json.dumps(response.json())


def test_a_utf8_csv_with_a_bom_is_accepted(api):
    rows = "\ufefffile,prompt\na.png,café crème\nb.png,rain\n"

    response = post_batch(api, items=csv_file(rows))

    assert response.status_code == 201, response.content
    assert response.json()["jobs"][0]["prompt"] == "café crème"


def zip_upload(members: dict[str, bytes], name="shots.zip") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in members.items():
            archive.writestr(path, data)
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="application/zip")


@pytest.mark.parametrize("path", ["../up.png", "a/../../up.png", "/etc/abs.png", "a/../b.png"])
def test_a_zip_member_with_an_absolute_or_parent_path_is_a_400_naming_it(api, media_root, path):
    upload = zip_upload({"one.png": make_image(), path: make_image(color=(1, 2, 3)), "two.png": make_image()})

    response = post_batch(api, images=[upload])

    assert_rejected(response, "images", fragment=path)
    assert_nothing_stored(media_root)


@pytest.mark.parametrize("field", ["seed_per_image", "fallbak"])
def test_an_unknown_top_level_field_is_a_400(api, media_root, field):
    response = post_batch(api, **{field: "2"})

    assert_rejected(response, field, fragment="unknown field")
    assert_nothing_stored(media_root)


@pytest.mark.parametrize("body", ["[1, 2]", "3", '"provider"', "null"])
def test_a_json_body_that_is_not_an_object_is_a_400(api, body):
    response = api.post("/api/batches/", body, content_type="application/json")

    assert_rejected(response, "request", fragment="must be a JSON object")


def test_an_unknown_field_in_a_json_body_is_a_400(api):
    response = api.post("/api/batches/", {"provider": "fal", "prompt": "p", "fallbak": "never"}, format="json")

    assert_rejected(response, "fallbak", fragment="unknown field")


@pytest.mark.parametrize("field,value", [
    ("prompt", {"text": "a cat"}), ("name", ["x"]), ("provider", ["fal"]), ("seeds_per_image", 2.5),
    ("budget_usd", {"usd": 1}), ("fallback", ["never"]), ("items", {"file": "a.png"})])
def test_a_json_body_field_of_the_wrong_type_is_a_400(api, field, value):
    body = {"provider": "fal", "prompt": "p", field: value}

    response = api.post("/api/batches/", body, format="json")

    assert_rejected(response, field)


def test_a_prompt_given_as_an_object_in_items_is_a_400(api):
    rows = json.dumps([{"file": "a.png", "prompt": {"text": "a cat"}}])

    response = post_batch(api, items=rows, images=[image_file("a.png")])

    assert_rejected(response, "items", fragment="must be text")


def portrait_photo_stored_landscape() -> bytes:
    """What a phone writes: landscape pixels and an EXIF orientation saying 'rotate 90°'."""
    image = Image.new("RGB", (640, 480), (10, 200, 30))
    image.paste((250, 0, 0), (0, 0, 100, 480))  # a red band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


def test_exif_orientation_is_applied_to_the_stored_image_and_the_output_size(api, media_root):
    response = post_batch(api, images=[SimpleUploadedFile("phone.jpg", portrait_photo_stored_landscape())])

    assert response.status_code == 201, response.content
    job = Job.objects.get()
    assert (job.params["width"], job.params["height"]) == (480, 640)  # portrait, as the photo is shown
    with job.input_image.open("rb") as handle, Image.open(handle) as stored:
        assert stored.size == (480, 640)
        assert stored.getexif().get(0x0112, 1) == 1  # not rotated a second time by whoever reads it
        top = stored.convert("RGB").getpixel((240, 20))
        assert top[0] > 200 and top[1] < 60  # the red band is now at the top, as the phone shows it


# --- storing inputs is part of the all-or-nothing ------------------------------------------------


def test_inputs_written_for_a_batch_whose_transaction_fails_are_deleted(user, media_root):
    spec = build_batch(provider="fal", prompt="waves", files=[UploadedFile("a.png", make_image())],
                       params={"num_frames": 17})
    spec.items[0].prompt = "a NUL\x00 intake would refuse"  # so that PostgreSQL itself refuses the row

    with pytest.raises(DataError):
        services.batch_create(owner=user, spec=spec)

    assert_nothing_stored(media_root)


def test_an_input_another_batch_already_uses_is_kept_when_a_batch_fails(user, media_root):
    good = services.batch_create(owner=user, spec=build_batch(
        provider="fal", prompt="waves", files=[UploadedFile("a.png", make_image())], params={"num_frames": 17}))
    spec = build_batch(provider="fal", prompt="waves", files=[UploadedFile("b.png", make_image())],
                       params={"num_frames": 17})
    spec.items[0].prompt = "bad\x00"

    with pytest.raises(DataError):
        services.batch_create(owner=user, spec=spec)

    assert good.jobs.get().input_image.storage.exists(good.jobs.get().input_image.name)
