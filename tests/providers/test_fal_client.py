"""The fal provider against the simulated fal queue, over real HTTP: one test per protocol quirk."""

import io
import time

import av
import pytest

from providers.base import Finished, GenerationRequest, Pending, Submitted
from providers.errors import PermanentError, ProviderError, TransientError
from providers.fal import FalClient, FalProvider
from providers.simulators.media import make_image

PARAMS = {"num_frames": 17, "fps": 16, "resolution": "480p", "steps": 27, "cfg": 3.5, "width": 640, "height": 480}


def request(**overrides):
    fields = dict(job_id="job-1", image=make_image(), image_content_type="image/png", prompt="a slow pan",
                  negative_prompt="", seed=7, params=PARAMS)
    fields.update(overrides)
    return GenerationRequest(**fields)


def wait_finished(provider, ref, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = provider.check(ref)
        if isinstance(outcome, Finished):
            return outcome
        assert isinstance(outcome, Pending)
        time.sleep(0.05)
    raise AssertionError("fal simulator did not finish in time")


@pytest.fixture
def provider(fal_sim):
    return FalProvider()


def test_it_goes_from_queued_to_completed_and_downloads_a_real_video(provider, fal_sim):
    submitted = provider.submit(request())
    assert isinstance(submitted, Submitted)
    first = provider.check(submitted.ref)
    assert isinstance(first, Pending)

    finished = wait_finished(provider, submitted.ref)

    with av.open(io.BytesIO(finished.video)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 17
    assert finished.meta["seed"] == 7


def test_it_uses_the_returned_urls_which_drop_the_endpoint_path(provider, fal_sim, settings):
    submitted = provider.submit(request())

    assert fal_sim.submits == {settings.FAL_ENDPOINT: 1}
    assert submitted.ref["status_url"] == f"{fal_sim.url}/fal-ai/wan/requests/{submitted.external_id}/status"
    wait_finished(provider, submitted.ref)
    # Nothing was ever asked of a URL rebuilt with the endpoint path (the simulator answers those 404).
    assert not [path for _, path in fal_sim.calls if "image-to-video/requests" in path]


def test_a_completed_request_can_still_carry_an_error(provider, fal_sim):
    fal_sim.inject("complete_with_error")
    submitted = provider.submit(request())

    with pytest.raises(TransientError) as failure:
        wait_finished(provider, submitted.ref)

    assert failure.value.code == "runner_disconnected"
    assert "Runner disconnected" in failure.value.message


def test_a_422_becomes_a_permanent_error_naming_the_field(provider, fal_sim):
    fal_sim.inject("validation_error")
    submitted = provider.submit(request())

    with pytest.raises(PermanentError) as failure:
        wait_finished(provider, submitted.ref)

    assert failure.value.permanent
    assert "image_url: Unsupported image" in failure.value.message


def test_it_retries_a_429_on_submit_then_succeeds(provider, fal_sim, settings):
    fal_sim.inject("submit_429", 2)

    submitted = provider.submit(request())

    assert isinstance(submitted, Submitted)
    assert fal_sim.submits == {settings.FAL_ENDPOINT: 1}
    assert sum(1 for method, _ in fal_sim.calls if method == "POST") == 3


def test_it_never_repeats_a_submit_that_failed_after_sending(provider, fal_sim):
    fal_sim.inject("submit_500")

    with pytest.raises(TransientError):
        provider.submit(request())

    assert sum(1 for method, _ in fal_sim.calls if method == "POST") == 1


def test_it_retries_a_5xx_on_result_fetch_then_succeeds(provider, fal_sim):
    submitted = provider.submit(request())
    fal_sim.inject("result_500", 2)

    finished = wait_finished(provider, submitted.ref)

    assert finished.video
    result_calls = [p for m, p in fal_sim.calls if m == "GET" and p.endswith(submitted.external_id)]
    assert len(result_calls) == 3


def test_cancel_stops_a_queued_request(fal_sim, settings):
    fal_sim.queue_seconds = 30
    provider = FalProvider()
    submitted = provider.submit(request())

    provider.cancel(submitted.ref)

    assert fal_sim.requests[submitted.external_id]["cancelled"]
    with pytest.raises(ProviderError):
        provider.check(submitted.ref)


def test_the_key_is_sent_to_fal_and_never_to_the_file_host(fal_sim, settings):
    fal_sim.files_host_saw_auth = []
    original = fal_sim._serve_file

    def spy(req, request_id):
        fal_sim.files_host_saw_auth.append(req.headers.get("Authorization"))
        return original(req, request_id)

    fal_sim._serve_file = spy
    provider = FalProvider()
    wait_finished(provider, provider.submit(request()).ref)

    assert fal_sim.files_host_saw_auth == [None]


def test_a_wrong_key_is_a_permanent_error_without_the_key_in_it(fal_sim, settings):
    provider = FalProvider(client=FalClient(fal_sim.url, "wrong:key"))

    with pytest.raises(PermanentError) as failure:
        provider.submit(request())

    assert failure.value.code == "unauthorized"
    assert "wrong:key" not in str(failure.value)


def test_a_missing_key_fails_with_a_clear_configuration_error(fal_sim, settings):
    settings.FAL_KEY = ""

    with pytest.raises(PermanentError, match="FAL_KEY is not set"):
        FalProvider().submit(request())
