"""The image's TLS terminator for real: Debian's nginx with the config the entrypoint renders
(`write-tls.sh`, `render-proxy.sh`, `nginx.conf.template`) in front of the simulated SwarmUI, which here
plays SwarmUI inside the image: plain HTTP on loopback, and it lets every loopback request past its
token check, as SwarmUI's `Network.AuthBypassIPs` does. genhub's own SwarmUIClient talks to it through
the proxy's port over the pinned channel.
"""

import shutil
import socket
import subprocess
import time

import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from providers import instance_tls
from providers.addresses import GuardedAdapter
from providers.errors import PermanentError, TransientError
from providers.simulators.media import make_image
from providers.simulators.swarmui import SwarmUISimulator
from providers.swarmui import SwarmUIClient, build_video_params
from tests.docker.test_swarmui_image import HERE, run, script_env

TOKEN = "Bearer 7Qm2-xV9_kL4pR8sT1wZ3yB6"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def proxied(tmp_path):
    """(proxy URL, the instance's TLS identity, the SwarmUI behind it)."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if not nginx:
        pytest.fail("nginx is not installed: apt-get install -y nginx (.ci/run installs it)")
    swarm = SwarmUISimulator(TOKEN, generation_seconds=0.1, behind_proxy=True).start()
    tls = instance_tls.generate()
    run_dir = tmp_path / "proxy"
    result = run(["bash", str(HERE / "write-tls.sh"), str(run_dir)],
                 env=script_env(**instance_tls.env_entries(tls)))
    assert result.returncode == 0, result.stderr
    port = free_port()
    result = run(["bash", str(HERE / "render-proxy.sh"), str(HERE / "nginx.conf.template"), str(run_dir), str(port),
                  str(swarm.port)], input=TOKEN, env=script_env())
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "nginx.log").open("w")
    process = subprocess.Popen([nginx, "-p", str(run_dir), "-c", str(run_dir / "nginx.conf"), "-e", "stderr",
                                "-g", "daemon off;"], stdout=log, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:  # wait for the port, not for a fixed time
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "nginx.log").read_text()
            time.sleep(0.05)
    yield url, tls, swarm
    process.terminate()
    process.wait(10)
    swarm.kill()


def pinned(certificate: str) -> requests.Session:
    session = requests.Session()
    session.mount("https://", GuardedAdapter(public_only=False, pinned_certificate=certificate))
    return session


def test_genhub_generates_through_the_proxy_over_the_pinned_channel(proxied):
    url, tls, swarm = proxied
    client = SwarmUIClient(url, TOKEN, certificate=tls.certificate_pem, status_timeout=5, ws_open_timeout=5)
    assert client.is_ready().ready
    progress = []
    params = build_video_params(image=make_image(), image_content_type="image/png", prompt="a cat", negative_prompt="",
                                seed=1, num_frames=17, fps=16, width=832, height=480, steps=4, cfg=1.0)
    video = client.generate_video(params, on_progress=progress.append)
    assert video.video[4:8] == b"ftyp" and progress and progress[-1] == 1.0
    assert swarm.generations[0].transport == "ws"  # the WebSocket upgrade went through the proxy


def test_a_request_without_the_token_is_refused_through_the_proxy_port(proxied):
    url, tls, swarm = proxied
    # SwarmUI itself lets loopback in without the token: that is why the proxy must check it.
    assert requests.post(f"http://127.0.0.1:{swarm.port}/API/GetNewSession", json={}, timeout=5).status_code == 200
    seen = len(swarm.request_log)
    session = pinned(tls.certificate_pem)
    for headers in ({}, {"Authorization": "Bearer wrong-token-000000000"}, {"Authorization": TOKEN.lower()}):
        assert session.post(f"{url}/API/GetNewSession", json={}, headers=headers, timeout=5).status_code == 401
        assert session.get(f"{url}/View/local/raw/x.mp4", headers=headers, timeout=5).status_code == 401
    with pytest.raises(InvalidStatus) as refused:
        connect(url.replace("https", "wss") + "/API/GenerateText2ImageWS", open_timeout=5,
                ssl=instance_tls.client_context(tls.certificate_pem))
    assert refused.value.response.status_code == 401
    assert len(swarm.request_log) == seen  # none of them reached SwarmUI
    with pytest.raises(PermanentError) as error:
        SwarmUIClient(url, "Bearer wrong-token-000000000", certificate=tls.certificate_pem).status()
    assert error.value.code == "unauthorized"


def test_a_different_certificate_is_refused_before_the_token_is_sent(proxied):
    url, _, swarm = proxied
    seen = len(swarm.request_log)
    impostor = instance_tls.generate().certificate_pem  # what genhub would pin for another instance
    client = SwarmUIClient(url, TOKEN, certificate=impostor, status_timeout=5, ws_open_timeout=5)
    with pytest.raises(TransientError) as error:
        client.status()
    assert error.value.code == "tls_refused"
    assert len(swarm.request_log) == seen
