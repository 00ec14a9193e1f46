"""SwarmUIClient against the SwarmUI simulator over real HTTP and WebSocket, one quirk per test
(SwarmUI's API)."""

import base64
import io
import logging
import threading
import time
from urllib.parse import quote

import av
import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from providers import instance_tls
from providers.addresses import GuardedAdapter
from providers.errors import PermanentError, ProviderError, TransientError
from providers.simulators.media import make_image
from providers.simulators.swarmui import SwarmUISimulator, _WebSocket
from providers.swarmui import SwarmUIClient, build_video_params
from providers.swarmui_contract import (
    LIGHTX2V_LORA,
    LIGHTX2V_LORA_LOW,
    LORA_SECTION_VIDEO,
    LORA_SECTION_VIDEO_SWAP,
    VIDEO_MODEL,
    VIDEO_SWAP_MODEL,
)

TOKEN = "Bearer sim-secret-5f0c2e9a71"
PROMPT = "a cat turns 100%41 + it's fine"  # spaces, `%xx`, `+`, `'`: all kept in SwarmUI output names


@pytest.fixture
def swarmui_sim():
    sim = SwarmUISimulator(TOKEN, generation_seconds=0.1).start()
    yield sim
    sim.kill()


@pytest.fixture
def client(swarmui_sim):
    return SwarmUIClient(swarmui_sim.url, TOKEN, certificate=swarmui_sim.certificate, status_timeout=2,
                         ws_open_timeout=2, ws_idle_timeout=5)


def video_params(*, frames=17, fps=16, **overrides):
    arguments = dict(image=make_image(), image_content_type="image/png", prompt=PROMPT, negative_prompt="blurry",
                     seed=7, num_frames=frames, fps=fps, width=832, height=480, steps=4, cfg=1.0)
    return build_video_params(**{**arguments, **overrides})


def pinned(sim) -> requests.Session:
    """A plain requests session that trusts only the simulator's certificate (as genhub does)."""
    session = requests.Session()
    session.mount("https://", GuardedAdapter(public_only=False, pinned_certificate=sim.certificate))
    return session


def routes(sim, method=None):
    return [path for verb, path, _ in sim.request_log if method in (None, verb)]


def test_it_sends_the_token_on_every_request(swarmui_sim, client):
    assert client.is_ready().ready
    client.generate_video(video_params())  # WebSocket handshake and the download
    swarmui_sim.refuse_websockets()
    client.generate_video(video_params())  # the HTTP route

    assert all(authorized for _, _, authorized in swarmui_sim.request_log)
    sent = routes(swarmui_sim)
    for route in ("/API/GetNewSession", "/API/GetCurrentStatus", "/API/ListModels",
                  "/API/GenerateText2ImageWS", "/API/GenerateText2Image"):
        assert route in sent
    assert sum(path.startswith("/View/") for path in sent) == 2


def test_a_request_without_the_token_is_refused(swarmui_sim, client):
    path = client.generate_video(video_params()).path
    view_url = f"{swarmui_sim.url}/{quote(path)}"

    for headers in ({}, {"Authorization": "Bearer wrong"}):
        refused = pinned(swarmui_sim).post(f"{swarmui_sim.url}/API/GetNewSession", json={}, headers=headers)
        assert (refused.status_code, refused.text) == (401, "Unauthorized")
        assert pinned(swarmui_sim).get(view_url, headers=headers).status_code == 401
    with pytest.raises(InvalidStatus) as handshake:
        connect(swarmui_sim.url.replace("https", "wss") + "/API/GenerateText2ImageWS", open_timeout=2,
                ssl=instance_tls.client_context(swarmui_sim.certificate))
    assert handshake.value.response.status_code == 401
    assert pinned(swarmui_sim).get(view_url, headers={"Authorization": TOKEN}).status_code == 200


def test_a_refused_token_is_a_permanent_error(swarmui_sim):
    client = SwarmUIClient(swarmui_sim.url, "Bearer not-the-instance-token", certificate=swarmui_sim.certificate)

    with pytest.raises(PermanentError) as status_error:
        client.status()
    assert status_error.value.code == "unauthorized"
    assert client.is_ready().ready is False


def test_the_token_never_appears_in_errors(swarmui_sim, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "Bearer wrong-secret-0d1e2f"
    pin = swarmui_sim.certificate
    messages = []
    for client, action in (
        (SwarmUIClient(swarmui_sim.url, wrong, certificate=pin), lambda c: c.status()),
        (SwarmUIClient(swarmui_sim.url, wrong, certificate=pin), lambda c: c.generate_video(video_params())),
        (SwarmUIClient(swarmui_sim.url, TOKEN, certificate=pin),
         lambda c: c.generate_video(video_params(video_model="nope.gguf"))),
    ):
        with pytest.raises(ProviderError) as error:
            action(client)
        messages += [str(error.value), repr(error.value), repr(client)]
    swarmui_sim.kill()
    down = SwarmUIClient(swarmui_sim.url, TOKEN, certificate=swarmui_sim.certificate)
    messages.append(down.is_ready().reason)
    with pytest.raises(ProviderError) as error:
        down.generate_video(video_params())
    messages.append(str(error.value))

    text = "\n".join(messages + [record.getMessage() for record in caplog.records])
    assert "secret" not in text


def test_it_reuses_one_session_across_calls(swarmui_sim, client):
    client.status()
    client.is_ready()
    client.generate_video(video_params())

    assert routes(swarmui_sim).count("/API/GetNewSession") == 1


def test_it_renews_an_expired_session_once(swarmui_sim, client):
    client.status()
    swarmui_sim.expire_sessions()

    assert client.status()["backend_status"]["status"] == "running"
    assert routes(swarmui_sim) == ["/API/GetNewSession", "/API/GetCurrentStatus",
                                   "/API/GetCurrentStatus", "/API/GetNewSession", "/API/GetCurrentStatus"]


def test_it_renews_an_expired_session_on_the_websocket(swarmui_sim, client):
    client.status()
    swarmui_sim.expire_sessions()

    video = client.generate_video(video_params())

    assert video.video
    assert routes(swarmui_sim).count("/API/GetNewSession") == 2
    assert routes(swarmui_sim).count("/API/GenerateText2ImageWS") == 2
    assert len(swarmui_sim.generations) == 1


def test_a_second_invalid_session_is_an_error(swarmui_sim, client, monkeypatch):
    monkeypatch.setattr(swarmui_sim, "_session_is_valid", lambda session_id: False)

    with pytest.raises(TransientError) as error:
        client.status()
    assert error.value.code == "invalid_session"
    assert routes(swarmui_sim).count("/API/GetNewSession") == 2


def test_it_percent_encodes_the_output_path(swarmui_sim, client):
    video = client.generate_video(video_params())

    assert video.path.startswith("View/local/raw/") and video.path.endswith(".mp4")
    assert PROMPT in video.path
    assert routes(swarmui_sim, "GET")[-1] == "/" + quote(video.path)
    # Left to requests, `%41` would be sent as-is and read back by the server as "A".
    naive = pinned(swarmui_sim).get(f"{swarmui_sim.url}/{video.path}", headers={"Authorization": TOKEN})
    assert naive.status_code == 404


def test_it_maps_http_200_with_error_to_a_job_error(swarmui_sim, client):
    swarmui_sim.refuse_websockets()

    with pytest.raises(PermanentError) as error:
        client.generate_video(video_params(video_model="Wan2.2-missing.gguf"))

    assert error.value.code == "invalid_params"
    assert "Invalid model value for param Model - 'Wan2.2-missing.gguf'" in str(error.value)
    assert "/API/GenerateText2Image" in routes(swarmui_sim, "POST")
    assert swarmui_sim.generations == []


def test_it_maps_a_websocket_error_message_to_a_job_error(swarmui_sim, client):
    with pytest.raises(PermanentError) as error:
        client.generate_video(video_params(frames=0))

    assert error.value.code == "invalid_params"
    assert "Video Frames" in str(error.value)
    assert "/API/GenerateText2Image" not in routes(swarmui_sim)


def test_a_failed_generation_is_a_transient_error(swarmui_sim, client):
    failure = "ComfyUI execution error: CUDA out of memory"
    swarmui_sim.fail_next_generation(failure)

    with pytest.raises(ProviderError) as error:
        client.generate_video(video_params())

    assert not error.value.permanent
    assert "CUDA out of memory" in str(error.value)
    assert [generation.error for generation in swarmui_sim.generations] == [failure]
    assert client.generate_video(video_params()).video


def test_it_relays_websocket_progress(swarmui_sim, client):
    progress = []

    video = client.generate_video(video_params(), on_progress=progress.append)

    assert len(progress) >= 4
    # The first report (0: the GPU took the job) marks the start; then it only grows, to 1.
    assert progress == sorted(set(progress)) and progress[0] == 0.0 and progress[-1] == 1.0
    assert video.request_id == swarmui_sim.generations[0].request_id
    assert [generation.transport for generation in swarmui_sim.generations] == ["ws"]


def test_it_falls_back_to_http_when_websocket_is_refused(swarmui_sim, client):
    swarmui_sim.refuse_websockets()

    video = client.generate_video(video_params(), on_progress=lambda fraction: None)

    assert video.path == swarmui_sim.generations[0].output_path
    assert [generation.transport for generation in swarmui_sim.generations] == ["http"]


def test_it_falls_back_to_http_when_the_websocket_drops_before_any_message(swarmui_sim, client, monkeypatch):
    def accept_then_drop(request, route):  # e.g. a proxy that upgrades but does not relay frames
        _WebSocket.accept(request, pause=lambda: None)

    monkeypatch.setattr(swarmui_sim, "_websocket", accept_then_drop)

    assert client.generate_video(video_params()).video
    assert [generation.transport for generation in swarmui_sim.generations] == ["http"]


def test_the_produced_video_decodes_with_the_requested_frame_count(client):
    video = client.generate_video(video_params(frames=21, fps=16))

    with av.open(io.BytesIO(video.video)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        assert stream.average_rate == 16
    assert frames == 21


def test_it_reports_not_ready_until_backend_running_and_models_listed():
    sim = SwarmUISimulator(TOKEN, models=[], loras=[]).start()
    try:
        client = SwarmUIClient(sim.url, TOKEN, certificate=sim.certificate)
        sim.backend_status = "loading"
        assert client.is_ready().reason == "SwarmUI backend is loading"

        sim.backend_status = "running"
        sim.supported_features = ["comfyui", "video"]
        assert "GGUF" in client.is_ready().reason

        sim.supported_features.append("gguf")
        not_ready = client.is_ready()
        assert not not_ready.ready and VIDEO_MODEL in not_ready.reason and LIGHTX2V_LORA in not_ready.reason

        sim.models.append(VIDEO_MODEL)
        sim.loras.append(LIGHTX2V_LORA)  # listed as `….safetensors`, required without the extension
        assert client.is_ready().ready
    finally:
        sim.kill()


def test_it_is_not_ready_while_health_fails_or_the_server_is_down(swarmui_sim):
    client = SwarmUIClient(swarmui_sim.url, TOKEN, certificate=swarmui_sim.certificate, status_timeout=0.3)
    swarmui_sim.fail_health(True)
    assert not client.is_ready().ready
    swarmui_sim.fail_health(False)
    assert client.is_ready().ready

    swarmui_sim.hang()
    started = time.monotonic()
    assert not client.is_ready().ready
    assert time.monotonic() - started < 2
    swarmui_sim.hang(False)

    swarmui_sim.kill()
    assert not client.is_ready().ready


def test_a_silent_websocket_is_a_transient_error(swarmui_sim):
    swarmui_sim.generation_seconds = 0.4
    client = SwarmUIClient(swarmui_sim.url, TOKEN, certificate=swarmui_sim.certificate, ws_idle_timeout=0.5)
    started = time.monotonic()

    with pytest.raises(TransientError) as error:
        client.generate_video(video_params(), on_progress=lambda fraction: swarmui_sim.hang())

    assert error.value.code == "timeout"
    assert time.monotonic() - started < 3


def test_a_hung_server_fails_the_handshake_without_falling_back_to_http(swarmui_sim):
    client = SwarmUIClient(swarmui_sim.url, TOKEN, certificate=swarmui_sim.certificate, ws_open_timeout=0.3)
    client.status()
    swarmui_sim.hang()

    with pytest.raises(TransientError) as error:
        client.generate_video(video_params())

    assert error.value.code == "timeout"
    swarmui_sim.hang(False)
    time.sleep(0.2)
    assert "/API/GenerateText2Image" not in routes(swarmui_sim) and swarmui_sim.generations == []


def test_a_killed_server_fails_the_generation_with_a_transient_error(swarmui_sim, client):
    with pytest.raises(TransientError):
        client.generate_video(video_params(), on_progress=lambda fraction: swarmui_sim.kill())

    assert len(swarmui_sim.generations) == 1


def test_it_never_sends_a_generation_twice_over_http(swarmui_sim, client):
    swarmui_sim.refuse_websockets()
    swarmui_sim.generation_seconds = 1.0
    killer = threading.Timer(0.3, swarmui_sim.kill)
    killer.start()

    with pytest.raises(TransientError):
        client.generate_video(video_params())

    killer.join()
    assert len(swarmui_sim.generations) == 1


def test_the_gpu_runs_one_generation_at_a_time(swarmui_sim, client):
    swarmui_sim.generation_seconds = 0.3
    results = []
    threads = [threading.Thread(target=lambda: results.append(client.generate_video(video_params())))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert len(results) == 2
    first, second = sorted(swarmui_sim.generations, key=lambda generation: generation.started_at)
    assert first.finished_at <= second.started_at


def test_build_video_params_confines_lightx2v_to_the_high_noise_model():
    image = make_image()
    params = video_params(image=image, image_content_type="image/png")

    assert params["model"] == params["videomodel"] == VIDEO_MODEL
    assert params["initimage"] == "data:image/png;base64," + base64.b64encode(image).decode()
    assert (params["initimagecreativity"], params["videoresolution"], params["images"]) == (0, "Image", 1)
    assert (params["width"], params["height"], params["videoframes"], params["videofps"]) == (832, 480, 17, 16)
    assert (params["videosteps"], params["videocfg"], params["videoformat"]) == (4, 1.0, "h264-mp4")
    assert params["loras"] == [LIGHTX2V_LORA]
    assert params["lorasectionconfinement"] == [LORA_SECTION_VIDEO]
    assert "videoswapmodel" not in params and "videoswappercent" not in params


def test_build_video_params_adds_the_low_noise_swap_model_only_when_given():
    params = video_params(swap_model=VIDEO_SWAP_MODEL)

    assert (params["videoswapmodel"], params["videoswappercent"]) == (VIDEO_SWAP_MODEL, 0.5)
    assert params["loras"] == [LIGHTX2V_LORA, LIGHTX2V_LORA_LOW]
    assert params["loraweights"] == ["1", "1"]
    assert params["lorasectionconfinement"] == [LORA_SECTION_VIDEO, LORA_SECTION_VIDEO_SWAP]
