"""A production process without a provider's key has that provider disabled: batches for it get a clear 400."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs.models import BatchRun, Job
from providers.simulators.media import make_image

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("provider", "unset", "message"), [
    ("fal", "FAL_KEY", "fal is not configured on this server (FAL_KEY is unset)"),
    ("vastai", "VAST_API_KEY", "vastai is not configured on this server (VAST_API_KEY or SWARMUI_IMAGE is unset)"),
])
def test_a_batch_for_a_provider_without_its_key_is_refused_with_400(api, settings, provider, unset, message):
    setattr(settings, unset, "")

    response = api.post("/api/batches/", {"provider": provider, "prompt": "a pan",
                                          "images": [SimpleUploadedFile("a.png", make_image())]}, format="multipart")

    assert response.status_code == 400
    assert {"field": "provider", "message": message} in response.json()["errors"]
    assert not BatchRun.objects.exists() and not Job.objects.exists()
