"""The channel to the GPU is TLS pinned to the certificate genhub made for the instance (issue 10,
"The channel to the GPU is plain HTTP"): against the SwarmUI simulator, which serves TLS as the image does."""

import pytest

from providers import instance_tls
from providers.errors import ConfigurationError, TransientError
from providers.simulators.media import make_image
from providers.simulators.swarmui import SwarmUISimulator
from providers.swarmui import SwarmUIClient, build_video_params
from providers.swarmui_contract import TLS_CERT_ENV_PREFIX, TLS_KEY_ENV
from providers.vastai import build_create_request
from tests.conftest import wait_for

TOKEN = "Bearer pinned-channel-3e9d"


@pytest.fixture
def swarm():
    sim = SwarmUISimulator(TOKEN, generation_seconds=0.05).start()
    yield sim
    sim.kill()


def params():
    return build_video_params(image=make_image(), image_content_type="image/png", prompt="p", negative_prompt="",
                              seed=1, num_frames=17, fps=16, width=832, height=480, steps=4, cfg=1.0)


def test_every_call_runs_over_tls_pinned_to_the_instance_certificate(swarm):
    assert swarm.url.startswith("https://")
    client = SwarmUIClient(swarm.url, TOKEN, certificate=swarm.certificate)
    assert client.is_ready().ready
    video = client.generate_video(params())  # WebSocket (wss) and the download (https)
    assert video.video[4:8] == b"ftyp" and swarm.generations[0].transport == "ws"
    assert swarm.tls_refusals == 0


def test_a_different_certificate_is_refused_before_the_token_is_sent(swarm):
    impostor = instance_tls.generate().certificate_pem  # the pin of another instance
    client = SwarmUIClient(swarm.url, TOKEN, certificate=impostor, ws_open_timeout=5)
    for call in (client.status, lambda: client.generate_video(params()), lambda: client.download("View/x.mp4")):
        with pytest.raises(TransientError) as refused:
            call()
        assert refused.value.code == "tls_refused" and TOKEN not in refused.value.message
    assert swarm.request_log == []  # no request, and so no token, ever reached the server
    wait_for(lambda: swarm.tls_refusals >= 3, timeout=10, message="the server to count the refused handshakes")
    assert client.is_ready().ready is False


def test_plain_http_or_a_missing_pin_is_refused():
    certificate = instance_tls.generate().certificate_pem
    for url, pin in (("http://203.0.113.7:40123", certificate), ("https://203.0.113.7:40123", None),
                     ("https://203.0.113.7:40123", "")):
        with pytest.raises(ConfigurationError):
            SwarmUIClient(url, TOKEN, certificate=pin)


def test_the_create_request_carries_the_key_and_certificate_within_vast_limits():
    tls = instance_tls.generate()
    env = build_create_request(image="i", label="l", disk_gb=100, swarmui_token="t" * 43, tls=tls)["env"]
    assert all(len(key) + len(value) <= 256 for key, value in env.items())  # vast: 256 per entry
    assert sum(len(key) + len(value) for key, value in env.items()) <= 32768
    assert TLS_KEY_ENV in env and f"{TLS_CERT_ENV_PREFIX}1" in env and f"{TLS_CERT_ENV_PREFIX}2" in env
    rebuilt = instance_tls.from_env(env)
    assert rebuilt.certificate_pem == tls.certificate_pem and rebuilt.fingerprint == tls.fingerprint
    assert "PRIVATE KEY" not in repr(tls)  # the key never shows in a repr or a log line


def test_a_key_that_does_not_match_the_certificate_is_refused():
    env = {**instance_tls.env_entries(instance_tls.generate()),
           TLS_KEY_ENV: instance_tls.env_entries(instance_tls.generate())[TLS_KEY_ENV]}
    with pytest.raises(instance_tls.TLSMaterialError):
        instance_tls.from_env(env)
    with pytest.raises(instance_tls.TLSMaterialError):
        instance_tls.from_env({TLS_KEY_ENV: "bm90IGEga2V5"})
