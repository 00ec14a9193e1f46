"""Simulated clips come at the size the real service renders, and the output check holds that size to the request."""

import pytest

from jobs.artifacts import VideoCheckError, check_matches_request, inspect_video
from jobs.dispatch import provider_pump
from jobs.models import Job
from providers.simulators.fal import output_size
from providers.simulators.media import make_image, make_video
from providers.simulators.swarmui import SwarmUISimulator
from providers.swarmui import SwarmUIClient, build_video_params
from tests.jobs.factories import make_batch

PARAMS = {"num_frames": 17, "fps": 16, "width": 640, "height": 480}


def facts_of(width, height):
    return inspect_video(make_video(make_image(), frames=17, fps=16, width=width, height=height))


def test_a_clip_at_the_requested_size_passes_the_check():
    check_matches_request(facts_of(640, 480), PARAMS)


def test_a_clip_at_another_size_fails_the_check_with_both_sizes():
    with pytest.raises(VideoCheckError, match="160×120 pixels, 640×480 was asked for"):
        check_matches_request(facts_of(160, 120), PARAMS)


def test_a_side_rounded_to_a_multiple_of_16_is_accepted():
    check_matches_request(facts_of(640, 464), PARAMS)


def test_a_backend_that_picks_the_size_is_held_to_the_aspect_only():
    check_matches_request(facts_of(960, 720), PARAMS, exact_size=False)
    with pytest.raises(VideoCheckError, match="aspect"):
        check_matches_request(facts_of(480, 640), PARAMS, exact_size=False)


@pytest.mark.django_db
def test_fal_clips_come_at_the_resolution_in_the_image_aspect(user, fal_sim, settings):
    settings.FAL_POLL_INTERVAL = 0.05
    job = make_batch(user, params={"num_frames": 17, "resolution": "480p"}).jobs.get()  # a 320×240 image

    provider_pump(provider_name="fal")

    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error_message
    with job.output_video.open("rb") as handle:
        facts = inspect_video(handle.read())
    assert (facts.width, facts.height) == (640, 480) == (job.params["width"], job.params["height"])


def test_the_simulated_fal_follows_the_aspect_ratio_it_is_given():
    portrait = make_image(width=240, height=320)
    assert output_size(portrait, "720p", "auto") == (720, 960)
    assert output_size(portrait, "480p", "16:9") == (848, 480)


def test_the_simulated_swarmui_renders_at_the_requested_width_and_height():
    token = "Bearer size-test-token"
    sim = SwarmUISimulator(token, generation_seconds=0.01).start()
    try:
        client = SwarmUIClient(sim.url, token, certificate=sim.certificate, status_timeout=2, ws_open_timeout=2,
                               ws_idle_timeout=5)
        params = build_video_params(image=make_image(), image_content_type="image/png", prompt="a pan",
                                    negative_prompt="", seed=1, num_frames=17, fps=16, width=832, height=480,
                                    steps=4, cfg=1.0)
        facts = inspect_video(client.generate_video(params).video)
    finally:
        sim.kill()
    assert (facts.width, facts.height) == (832, 480)
