"""Property: whatever body is thrown at `POST /api/batches/`, the answer is 201 or a 400 in the API's
JSON shape, and a 400 leaves no row and no file behind (issue 10). Real API, real PostgreSQL."""

import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from jobs.models import BatchRun, Job
from providers.simulators.media import make_image

pytestmark = pytest.mark.django_db
EXAMPLES = 150
HYPOTHESIS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

PNG = make_image(width=64, height=64)
JPEG = make_image(width=96, height=64, fmt="JPEG")
FIELDS = ["provider", "name", "prompt", "preset", "params", "items", "seeds_per_image", "budget_usd", "fallback",
          "fallback_after"]
PARAM_NAMES = ["num_frames", "fps", "resolution", "width", "height", "steps", "cfg", "seed", "negative_prompt"]

text = st.text(max_size=40)
names = st.sampled_from(FIELDS) | st.sampled_from(["seed_per_image", "fallbak", "images", "csrfmiddlewaretoken"]) | text
scalars = st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True) | text
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.sampled_from(PARAM_NAMES + ["file", "prompt"]) | text, inner,
                                             max_size=4), max_leaves=12)
plausible = {
    "provider": st.sampled_from(["fal", "vastai", "", "FAL"]) | json_values,
    "prompt": st.sampled_from(["a slow pan", "", "x\x00y", "=HYPERLINK(1)"]) | json_values,
    "preset": st.sampled_from(["draft", "hd", "", "ultra"]) | json_values,
    "params": st.dictionaries(st.sampled_from(PARAM_NAMES), json_values, max_size=4) | json_values,
    "items": st.sampled_from(["file,prompt\na.png,waves\n", "file,prompt,mood\na.png,b,c,d\n", "[" * 3000,
                              json.dumps([{"file": "a.png", "prompt": {"x": 1}}])]) | json_values,
}


def field_value(name):
    return plausible.get(name, json_values)


json_bodies = st.dictionaries(names, json_values, max_size=6).flatmap(
    lambda body: st.fixed_dictionaries({name: field_value(name) for name in body})) | json_values


def zip_of(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, data in members.items():
            archive.writestr(path, data)
    return buffer.getvalue()


file_names = st.sampled_from(["a.png", "b.jpg", "shots.zip", "rows.csv", "x" * 300, "../up.png"]) | st.text(
    alphabet=st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters='"\\'), min_size=1, max_size=20
).filter(lambda name: name.rsplit("/", 1)[-1] not in ("", ".", ".."))  # names a client cannot send at all
contents = st.sampled_from([PNG, JPEG, PNG[: len(PNG) // 2], b"", b"GIF89a", bytes(2000)]) | st.binary(max_size=300) \
    | st.dictionaries(st.sampled_from(["a.png", "../b.png", "/abs.png", "d/c.png", "z.zip", ".hidden"]),
                      st.sampled_from([PNG, JPEG, b"junk", bytes(200_000)]), max_size=3).map(zip_of)
files = st.lists(st.tuples(file_names, contents), max_size=4)


def as_form_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# Multipart fields are text: the same plausible and hostile values, as a form would send them.
form_fields = st.dictionaries(names, st.just(None), max_size=6).flatmap(
    lambda fields: st.fixed_dictionaries({name: field_value(name).map(as_form_text) for name in fields}))


def snapshot(media_root) -> tuple:
    stored = sorted(str(p) for p in media_root.rglob("*") if p.is_file()) if media_root.exists() else []
    return BatchRun.objects.count(), Job.objects.count(), stored


def check(response, before, media_root):
    assert response.status_code in (201, 400), (response.status_code, response.content[:500])
    event(f"status {response.status_code}")  # --hypothesis-show-statistics: how many were created
    assert response["Content-Type"] == "application/json"
    body = response.json()
    if response.status_code == 400:
        assert isinstance(body["message"], str) and body["message"]
        assert all(isinstance(e, dict) and "field" in e and "message" in e for e in body.get("errors", []))
        assert snapshot(media_root) == before, "a refused request left something behind"


@HYPOTHESIS
@given(body=json_bodies)
def test_any_json_body_is_a_201_or_a_400_that_stores_nothing(api, media_root, body):
    before = snapshot(media_root)

    response = api.post("/api/batches/", json.dumps(body), content_type="application/json")

    check(response, before, media_root)


@HYPOTHESIS
@given(fields=form_fields, uploads=files, items_file=st.none() | st.binary(max_size=200))
def test_any_multipart_body_is_a_201_or_a_400_that_stores_nothing(api, media_root, fields, uploads, items_file):
    before = snapshot(media_root)
    data = {name: value for name, value in fields.items() if name not in ("images", "items")}
    data["images"] = [SimpleUploadedFile(name, content) for name, content in uploads]
    if items_file is not None:
        data["items"] = SimpleUploadedFile("rows.csv", items_file)

    response = api.post("/api/batches/", data, format="multipart")

    check(response, before, media_root)
