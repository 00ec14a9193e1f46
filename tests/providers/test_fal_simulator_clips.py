"""The fal simulator's clip cache: a repeat of a recent clip is served without encoding it again, and
nothing that changes a clip's bytes is ever answered from the cache."""

import io
import threading

import av
import pytest

from providers.fal import FalProvider
from providers.simulators.media import ClipCache, make_image
from tests.providers.test_fal_client import PARAMS, request, wait_finished

SHAPE = {"frames": 9, "fps": 8, "width": 64, "height": 48}


def frames_and_fps(video: bytes) -> tuple[int, float]:
    with av.open(io.BytesIO(video)) as container:
        stream = container.streams.video[0]
        return sum(1 for _ in container.decode(stream)), float(stream.average_rate)


def test_an_identical_clip_is_encoded_once_and_served_with_the_same_bytes():
    cache = ClipCache()
    image = make_image(width=64, height=48)

    first = cache.video(image, **SHAPE)
    again = cache.video(bytes(image), **SHAPE)  # equal bytes, another object: the key is the content

    assert again == first
    assert cache.renders == 1


def test_a_clip_asked_for_by_many_at_once_is_encoded_once():
    cache = ClipCache()
    image = make_image(width=64, height=48)
    start = threading.Barrier(6)
    videos = []

    def download():
        start.wait()
        videos.append(cache.video(image, **SHAPE))

    threads = [threading.Thread(target=download) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(videos) == 6 and len(set(videos)) == 1
    assert cache.renders == 1


@pytest.mark.parametrize("field, value", [("frames", 13), ("fps", 16), ("width", 80), ("height", 64)])
def test_a_clip_differing_in_any_shape_field_is_encoded_anew(field, value):
    cache = ClipCache()
    image = make_image(width=64, height=48)
    base = cache.video(image, **SHAPE)

    other = cache.video(image, **{**SHAPE, field: value})

    assert other != base
    assert cache.renders == 2


def test_a_clip_of_another_image_is_encoded_anew():
    cache = ClipCache()
    base = cache.video(make_image(width=64, height=48), **SHAPE)

    other = cache.video(make_image(width=64, height=48, color=(10, 200, 30)), **SHAPE)

    assert other != base
    assert cache.renders == 2


def test_the_cache_forgets_the_least_recently_used_clip_beyond_its_size():
    cache = ClipCache(size=2)
    images = [make_image(width=64, height=48, color=(i * 60, 0, 0)) for i in range(3)]
    cache.video(images[0], **SHAPE)
    cache.video(images[1], **SHAPE)
    cache.video(images[0], **SHAPE)  # now the most recent: images[1] goes first

    cache.video(images[2], **SHAPE)
    assert (len(cache), cache.renders) == (2, 3)
    cache.video(images[0], **SHAPE)
    assert cache.renders == 3
    cache.video(images[1], **SHAPE)
    assert cache.renders == 4


def test_the_simulator_serves_one_image_under_many_seeds_from_one_render(fal_sim):
    provider = FalProvider()
    image = make_image()

    videos = [wait_finished(provider, provider.submit(request(job_id=f"job-{seed}", image=image, seed=seed)).ref).video
              for seed in (1, 2, 3)]

    assert videos[0] == videos[1] == videos[2]
    assert fal_sim.clips.renders == 1
    assert frames_and_fps(videos[0]) == (PARAMS["num_frames"], PARAMS["fps"])


def test_a_contradicting_output_still_contradicts_after_the_same_request_was_cached(fal_sim):
    provider = FalProvider()
    image = make_image()
    normal = wait_finished(provider, provider.submit(request(job_id="normal", image=image)).ref).video

    fal_sim.inject("contradicting_output")
    contradicting = wait_finished(provider, provider.submit(request(job_id="odd", image=image)).ref).video

    assert frames_and_fps(normal) == (17, 16)
    assert frames_and_fps(contradicting) == (33, 32)  # interpolated: (n - 1) · 2 + 1 frames at twice the fps
    assert fal_sim.clips.renders == 2


def test_a_bad_video_fault_is_served_even_when_its_clip_is_cached(fal_sim):
    provider = FalProvider()
    image = make_image()
    good = wait_finished(provider, provider.submit(request(job_id="good", image=image)).ref).video

    fal_sim.inject("bad_video")
    bad = wait_finished(provider, provider.submit(request(job_id="bad", image=image)).ref).video

    assert bad != good
    with pytest.raises(av.error.InvalidDataError):  # an MP4 header with no video in it
        frames_and_fps(bad)
