"""Finding a clip again: each generation is tagged (`extra_metadata`), and `ListImages` finds its saved
output by that tag, so a clip whose worker died before collecting it need not be generated twice
(simulator over real HTTP; the listing's replies are untrusted like any other)."""

import json

import pytest

from providers.errors import TransientError
from providers.simulators.swarmui import SwarmUISimulator
from providers.swarmui import SwarmUIClient, build_video_params, reported_generation_seconds
from tests.providers.test_swarmui_client import TOKEN, video_params


@pytest.fixture
def sim():
    sim = SwarmUISimulator(TOKEN, generation_seconds=0.2).start()
    yield sim
    sim.kill()


@pytest.fixture
def client(sim):
    return SwarmUIClient(sim.url, TOKEN, certificate=sim.certificate, status_timeout=5, ws_open_timeout=5)


def tagged(tag, seed=1):
    params = video_params(seed=seed)
    params["extra_metadata"] = {"genhub_work": tag}
    return params


def test_the_work_tag_travels_as_extra_metadata():
    params = build_video_params(image=b"x", image_content_type="image/png", prompt="p", negative_prompt="", seed=1,
                                num_frames=17, fps=16, width=64, height=64, steps=4, cfg=1.0, work_tag="job:3")
    assert params["extra_metadata"] == {"genhub_work": "job:3"}
    untagged = build_video_params(image=b"x", image_content_type="image/png", prompt="p", negative_prompt="",
                                  seed=1, num_frames=17, fps=16, width=64, height=64, steps=4, cfg=1.0)
    assert "extra_metadata" not in untagged


def test_it_finds_the_output_of_a_tagged_generation_among_others(client, sim, monkeypatch):
    first = client.generate_video(tagged("job-a:1", seed=1))
    second = client.generate_video(tagged("job-b:1", seed=2))
    listings, list_images = [], sim._list_images
    monkeypatch.setattr(sim, "_list_images", lambda body: listings.append(body) or list_images(body))

    path, extra = client.find_output("job-a:1")

    assert path == first.path and path != second.path
    assert client.download(path) == first.video
    assert reported_generation_seconds(extra) is not None
    assert client.find_output("job-a:2") is None  # another attempt of the same job left nothing
    listing = listings[0]
    assert (listing["path"], listing["depth"], listing["sortBy"]) == ("raw", 2, "Date")


def test_it_returns_none_when_nothing_was_saved(client):
    assert client.find_output("job-a:1") is None


def test_a_listing_with_hostile_entries_yields_nothing_to_fetch(client, sim, monkeypatch):
    client.generate_video(tagged("job-a:1"))
    meta = json.dumps({"sui_extra_data": {"genhub_work": "job-a:1"}})
    monkeypatch.setattr(sim, "_list_images", lambda body: {"files": [
        "not an object", {"src": "2026-12-01/clip.mp4", "metadata": "{not json"},
        {"src": "2026-12-01/clip.mp4", "metadata": json.dumps(["a list"])},
        {"src": "2026-12-01/still.png", "metadata": meta},
        {"src": 7, "metadata": meta},
    ]})
    assert client.find_output("job-a:1") is None

    monkeypatch.setattr(sim, "_list_images", lambda body: {"files": [{"src": "../../etc/passwd.mp4",
                                                                       "metadata": meta}]})
    with pytest.raises(TransientError) as caught:
        client.find_output("job-a:1")
    assert caught.value.code == "bad_output_path"


@pytest.mark.parametrize("text, seconds", [("12.34 sec", 12.34), ("2.50 min", 150.0), ("soon", None),
                                           ("-1 sec", None), ("", None), ("1e9 min", None)])
def test_it_reads_the_generation_time_swarmui_reports(text, seconds):
    assert reported_generation_seconds({"generation_time": text}) == seconds
