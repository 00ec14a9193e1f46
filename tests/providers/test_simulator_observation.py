"""The simulators' read-only records of generated work, which benchmarks count instead of genhub's own DB."""

import requests

from providers import instance_tls
from providers.fal import FalClient
from providers.simulators.fal import FalSimulator
from providers.simulators.media import make_image
from providers.simulators.swarmui import SwarmUISimulator
from providers.swarmui import SwarmUIClient, build_video_params
from providers.vastai import build_create_request
from tests.conftest import wait_for

TOKEN = "Bearer observation-token"


def video_params(seed: int) -> dict:
    return build_video_params(image=make_image(), image_content_type="image/png", prompt="p", negative_prompt="",
                              seed=seed, num_frames=17, fps=16, width=320, height=240, steps=2, cfg=1.0)


def test_swarmui_counts_generations_per_seed_and_only_finished_clips_as_completed():
    sim = SwarmUISimulator(TOKEN, generation_seconds=0.05).start()
    try:
        client = SwarmUIClient(sim.url, TOKEN, certificate=sim.certificate, status_timeout=2, ws_open_timeout=2,
                               ws_idle_timeout=5)
        client.generate_video(video_params(7))
        client.generate_video(video_params(7))
        client.generate_video(video_params(8))
        sim.fail_next_generation()
        try:
            client.generate_video(video_params(9))
        except Exception:  # noqa: BLE001 - the failure itself is the client's business, not this test's
            pass

        assert sim.generation_counts() == {7: 2, 8: 1, 9: 1}
        assert sim.generation_counts(completed=True) == {7: 2, 8: 1}
        assert sim.generation_counts("videoframes") == {17: 4}
        # What the client downloaded, by the paths the generations returned.
        assert sim.fetched_outputs() == {g.output_path for g in sim.generations if g.output_path}
        assert len(sim.fetched_outputs()) == 3
    finally:
        sim.kill()


def test_vast_counts_generations_of_every_instance_including_destroyed_and_lost_ones(vast_sim):
    def create(offer_id: int) -> int:
        body = build_create_request(image="genhub/swarmui:test", label="genhub", disk_gb=100, swarmui_token=TOKEN,
                                    tls=instance_tls.generate())
        response = requests.put(f"{vast_sim.url}/api/v0/asks/{offer_id}/", timeout=5, json=body,
                                headers={"Authorization": f"Bearer {vast_sim.api_key}"})
        return response.json()["new_contract"]

    def generate(instance_id: int, seed: int):
        inst = vast_sim.instances[instance_id]
        wait_for(lambda: inst.swarmui is not None and inst.swarmui.backend_status == "running", timeout=10)
        SwarmUIClient(inst.swarmui.url, TOKEN, certificate=inst.swarmui.certificate, status_timeout=2,
                      ws_open_timeout=2, ws_idle_timeout=5).generate_video(video_params(seed))

    first, second = create(101), create(102)
    generate(first, 1)
    generate(second, 1)
    generate(second, 2)
    requests.delete(f"{vast_sim.url}/api/v0/instances/{first}/", timeout=5,
                    headers={"Authorization": f"Bearer {vast_sim.api_key}"})

    vast_sim.kill_instance(second, mode="vanish")

    assert vast_sim.instances[first].destroyed
    assert vast_sim.generation_counts(completed=True) == {1: 2, 2: 1}
    assert vast_sim.generation_counts() == {1: 2, 2: 1}
    # A fault's lost machine is told apart from one destroyed on request (its outputs went with it).
    assert (vast_sim.instances[first].lost_by, vast_sim.instances[second].lost_by) == ("", "vanish")


def test_fal_counts_every_accepted_submission_and_completed_ones_apart():
    sim = FalSimulator("fal-key:secret", queue_seconds=0.0, run_seconds=0.05).start()
    try:
        client = FalClient(sim.url, "fal-key:secret")
        endpoint = "fal-ai/wan/v2.2-a14b/image-to-video"
        payload = {"prompt": "p", "image_url": "data:image/png;base64,AAAA", "num_frames": 81}
        sim.inject("submit_429")
        done = client.submit(endpoint, {**payload, "seed": 1})  # retried after the 429: one accepted
        client.submit(endpoint, {**payload, "seed": 1})
        bad = client.submit(endpoint, {**payload, "seed": 2, "num_frames": 5})  # the runner rejects it
        for submitted in (done, bad):
            wait_for(lambda submitted=submitted: client.status(submitted["status_url"])["status"] == "COMPLETED",
                     timeout=10, interval=0.05)

        assert sim.generation_counts() == {1: 2, 2: 1}
        # fal runs requests on its own clock, polled or not: the second seed-1 request completed too.
        wait_for(lambda: sim.generation_counts(completed=True) == {1: 2}, timeout=10, interval=0.05)
    finally:
        sim.stop()
