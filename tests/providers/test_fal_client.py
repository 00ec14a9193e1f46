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


def test_a_5xx_on_a_completed_result_is_a_result_fetch_error_and_a_later_check_fetches_it(provider, fal_sim):
    from providers.fal import ResultFetchError

    submitted = provider.submit(request())
    fal_sim.inject("result_500", 2)
    errors = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            outcome = provider.check(submitted.ref)
        except ResultFetchError as exc:
            errors.append(exc)
            continue
        if isinstance(outcome, Finished):
            break
        time.sleep(0.05)

    assert isinstance(outcome, Finished) and outcome.video
    assert len(errors) == 2 and all(e.transport and not e.permanent for e in errors)
    assert "could not be fetched" in errors[0].message
    result_calls = [p for m, p in fal_sim.calls if m == "GET" and p.endswith(submitted.external_id)]
    assert len(result_calls) == 3  # one try per check: the pump spaces them out
    assert sum(fal_sim.submits.values()) == 1
    assert outcome.source == {"video_url": f"{fal_sim.url}/files/{submitted.external_id}/output.mp4"}


def test_the_payload_turns_interpolation_off_in_all_three_fields_so_fps_is_as_asked(provider, fal_sim):
    submitted = provider.submit(request(params={**PARAMS, "fps": 24}))

    finished = wait_finished(provider, submitted.ref)

    payload = fal_sim.requests[submitted.external_id]["payload"]
    assert (payload["interpolator_model"], payload["num_interpolated_frames"],
            payload["adjust_fps_for_interpolation"]) == ("none", 0, False)
    assert payload["frames_per_second"] == 24
    with av.open(io.BytesIO(finished.video)) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == 24
        assert sum(1 for _ in container.decode(stream)) == 17


def test_the_simulator_interpolates_with_fals_defaults_when_the_fields_are_left_out(fal_sim):
    from providers.simulators.fal import FalSimulator

    payload = {"image_url": "data:image/png;base64,", "num_frames": 17, "frames_per_second": 16}
    image = make_image()
    import base64

    payload["image_url"] += base64.b64encode(image).decode()
    with av.open(io.BytesIO(FalSimulator._render(payload))) as container:
        stream = container.streams.video[0]
        assert (float(stream.average_rate), sum(1 for _ in container.decode(stream))) == (32, 33)


def test_on_a_small_account_requests_wait_in_queue_in_order_with_their_position(fal_sim):
    fal_sim.concurrency = 2
    fal_sim.queue_seconds = 0
    fal_sim.run_seconds = 30
    provider = FalProvider()
    refs = [provider.submit(request(job_id=f"job-{i}")).ref for i in range(4)]

    outcomes = [provider.check(ref) for ref in refs]

    assert [o.started for o in outcomes] == [True, True, False, False]
    assert [o.queue_position for o in outcomes] == [None, None, 0, 1]
    assert fal_sim.max_running == 2


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


def test_the_queue_moves_by_the_clock_not_when_someone_polls(fal_sim):
    fal_sim.concurrency = 1
    fal_sim.queue_seconds, fal_sim.run_seconds = 0.1, 0.2
    provider = FalProvider()
    first, second = (provider.submit(request(job_id=f"job-{i}")).ref for i in range(2))

    time.sleep(0.8)  # nobody polls: both requests run meanwhile, one after the other
    outcomes = [provider.check(ref, collect=False) for ref in (first, second)]

    one, two = (fal_sim.requests[ref["request_id"]] for ref in (first, second))
    assert [type(o).__name__ for o in outcomes] == ["Completed", "Completed"]
    assert one["started"] == pytest.approx(one["submitted"] + 0.1, abs=0.02)
    assert two["started"] == one["finished"] == one["started"] + 0.2  # the freed slot went to it at once
    assert two["finished"] == two["started"] + 0.2
