"""Provider replies are untrusted input (issue 10, "Provider replies are trusted"): over real HTTP, with
a second real server standing in for wherever a hostile or misrouted reply points."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from providers.addresses import UntrustedAddress
from providers.base import Finished, GenerationRequest
from providers.errors import PermanentError, ProviderError, TransientError
from providers.fal import FalClient, FalProvider
from providers.http import HttpClient
from providers.simulators.media import make_image
from providers.simulators.swarmui import SwarmUISimulator
from providers.swarmui import SwarmUIClient, build_video_params

PARAMS = {"num_frames": 17, "fps": 16, "resolution": "480p", "steps": 27, "cfg": 3.5, "width": 640, "height": 480}
TOKEN = "Bearer untrusted-replies-7a1c"


class Recorder:
    """A real HTTP server that records every request (and its Authorization header) and answers JSON.
    `reply(handler)` returns (status, body bytes, headers) for each request."""

    def __init__(self, reply=None):
        self.requests = []
        self.connections = 0
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                recorder.connections += 1
                super().setup()

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                recorder.requests.append((self.command, self.path, self.headers.get("Authorization")))
                status, body, headers = (reply or (lambda h: (200, b"{}", {})))(self)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers and not headers.get("_close_delimited"):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if headers.get("_close_delimited"):
                    self.close_connection = True

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client that stops reading (the size limit) breaks the pipe: expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.port = self.server.server_address[1]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def elsewhere():
    server = Recorder()
    yield server
    server.stop()


def request():
    return GenerationRequest(job_id="job-1", image=make_image(), image_content_type="image/png", prompt="a pan",
                             negative_prompt="", seed=7, params=PARAMS)


# --- fal: the key goes only to the configured queue ------------------------------------------------

def test_a_fal_reply_pointing_at_another_server_never_gets_the_key(settings, elsewhere):
    """The queue answers the submit with status/response/cancel URLs on another (local, real) server."""
    def hostile(handler):
        body = (f'{{"request_id": "r1", "status_url": "{elsewhere.url}/s", "response_url": "{elsewhere.url}/r", '
                f'"cancel_url": "{elsewhere.url}/c"}}').encode()
        return 200, body, {"Content-Type": "application/json"}

    queue = Recorder(hostile)
    try:
        settings.FAL_QUEUE_URL = queue.url
        provider = FalProvider()
        with pytest.raises(UntrustedAddress) as refused:
            provider.submit(request())
        assert refused.value.permanent and "FAL_QUEUE_URL" in refused.value.message
        assert settings.FAL_KEY not in refused.value.message
        # A stored reference with such URLs (from before, or from the database) is refused the same way.
        ref = {"request_id": "r1", "status_url": f"{elsewhere.url}/s", "response_url": f"{elsewhere.url}/r",
               "cancel_url": f"{elsewhere.url}/c"}
        with pytest.raises(UntrustedAddress):
            provider.check(ref)
        provider.cancel(ref)  # best effort: logged, nothing sent
        # Same host, other port or scheme: still another server.
        for other in (f"http://127.0.0.1:{elsewhere.port}/s", queue.url.replace("http://", "https://") + "/s"):
            with pytest.raises(UntrustedAddress):
                provider.client.status(other)
    finally:
        queue.stop()
    assert queue.requests and all(auth == f"Key {settings.FAL_KEY}" for _, _, auth in queue.requests)
    assert elsewhere.requests == [] and elsewhere.connections == 0


def test_fal_urls_on_the_configured_queue_are_followed(provider_fal, fal_sim):
    submitted = provider_fal.submit(request())
    deadline = time.monotonic() + 10
    while not isinstance(outcome := provider_fal.check(submitted.ref), Finished):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert outcome.video[4:8] == b"ftyp"


@pytest.fixture
def provider_fal(fal_sim):
    return FalProvider()


def test_a_fal_video_on_a_host_outside_fal_file_hosts_is_not_fetched(settings, elsewhere):
    client = FalClient("https://queue.fal.run", "k:s")
    for url in (f"{elsewhere.url}/x.mp4", "https://evil.example/x.mp4", "ftp://v3.fal.media/x.mp4",
                "https://user:pw@v3.fal.media/x.mp4", "https://v3.fal.media.evil.example/x.mp4"):
        settings.FAL_FILE_HOSTS = ["v3.fal.media", "*.fal.media"]
        with pytest.raises(UntrustedAddress):
            client.download(url)
    assert elsewhere.connections == 0


# --- downloads: no private addresses, bounded size --------------------------------------------------

def test_a_download_to_loopback_is_refused_when_private_addresses_are_not_allowed(settings, elsewhere):
    settings.GENHUB_ALLOW_PRIVATE_DOWNLOADS = False
    settings.FAL_FILE_HOSTS = ["127.0.0.1", "localhost"]
    client = FalClient("https://queue.fal.run", "k:s")
    # An IP literal is refused before any connection; plain http is refused in production.
    for url in (f"https://127.0.0.1:{elsewhere.port}/x.mp4", f"http://localhost:{elsewhere.port}/x.mp4"):
        with pytest.raises(UntrustedAddress):
            client.download(url)
    assert elsewhere.connections == 0
    # A name is checked on the address the socket really reached (no DNS rebinding): refused before TLS
    # or any request.
    with pytest.raises(UntrustedAddress) as refused:
        client.download(f"https://localhost:{elsewhere.port}/x.mp4")
    assert "127.0.0.1" in refused.value.message
    assert elsewhere.requests == []


def test_allowing_private_addresses_lets_the_simulators_be_reached(settings, elsewhere):
    settings.GENHUB_ALLOW_PRIVATE_DOWNLOADS = True
    assert HttpClient("t", public_only=True).download(f"{elsewhere.url}/x") == b"{}"


def test_an_oversized_output_is_refused_while_it_streams(settings):
    big = b"\0" * 300_000

    def declared(handler):
        return 200, big, {"Content-Type": "video/mp4"}

    def undeclared(handler):  # no Content-Length: the body ends when the connection closes
        return 200, big, {"Content-Type": "video/mp4", "_close_delimited": "1"}

    settings.GENHUB_MAX_DOWNLOAD_BYTES = 100_000
    for reply in (declared, undeclared):
        server = Recorder(reply)
        try:
            with pytest.raises(PermanentError) as refused:
                HttpClient("fal CDN", public_only=True).download(f"{server.url}/out.mp4")
            assert refused.value.code == "output_too_large" and "100000" in refused.value.message
        finally:
            server.stop()
    settings.GENHUB_MAX_DOWNLOAD_BYTES = 400_000
    server = Recorder(undeclared)
    try:
        assert HttpClient("fal CDN", public_only=True).download(f"{server.url}/out.mp4") == big
    finally:
        server.stop()


def test_an_oversized_fal_video_fails_the_job_instead_of_filling_memory(settings, provider_fal):
    settings.GENHUB_MAX_DOWNLOAD_BYTES = 1000
    submitted = provider_fal.submit(request())
    deadline = time.monotonic() + 10
    with pytest.raises(PermanentError) as refused:
        while time.monotonic() < deadline:
            provider_fal.check(submitted.ref)
            time.sleep(0.05)
    assert refused.value.code == "output_too_large"


# --- SwarmUI: outputs are relative View/ paths on the pinned base URL ---------------------------------

@pytest.fixture
def swarm():
    sim = SwarmUISimulator(TOKEN, generation_seconds=0.05).start()
    yield sim
    sim.kill()


@pytest.mark.parametrize("path", ["View/../../etc/passwd", "View/local/raw/../../../x.mp4", "/View/local/x.mp4",
                                  "https://evil.example/View/x.mp4", "View//etc/x.mp4", "View/./x.mp4",
                                  "View\\..\\x.mp4", "Output/x.mp4", "View/a\nb.mp4"])
def test_a_swarmui_output_path_that_is_not_a_relative_view_path_is_refused(swarm, path):
    client = SwarmUIClient(swarm.url, TOKEN, certificate=swarm.certificate)
    with pytest.raises(TransientError) as refused:
        client.download(path)
    assert refused.value.code == "bad_output_path"
    assert not [p for _, p, _ in swarm.request_log if not p.startswith("/API/")]


def test_an_oversized_swarmui_output_is_refused(swarm, settings):
    settings.GENHUB_MAX_DOWNLOAD_BYTES = 1000
    client = SwarmUIClient(swarm.url, TOKEN, certificate=swarm.certificate)
    params = build_video_params(image=make_image(), image_content_type="image/png", prompt="p", negative_prompt="",
                                seed=1, num_frames=17, fps=16, width=832, height=480, steps=4, cfg=1.0)
    with pytest.raises(ProviderError) as refused:
        client.generate_video(params)
    assert refused.value.code == "output_too_large"


def test_an_instance_on_a_private_address_is_not_called_when_that_is_not_allowed(swarm, settings):
    settings.GENHUB_ALLOW_PRIVATE_DOWNLOADS = False
    client = SwarmUIClient(swarm.url, TOKEN, certificate=swarm.certificate)
    with pytest.raises(UntrustedAddress):
        client.status()
    params = build_video_params(image=make_image(), image_content_type="image/png", prompt="p", negative_prompt="",
                                seed=1, num_frames=17, fps=16, width=832, height=480, steps=4, cfg=1.0)
    with pytest.raises(UntrustedAddress):
        client._ws_once(params, "session", None, None)  # the WebSocket path checks its socket the same way
    assert swarm.request_log == []  # connected, found private, closed before TLS: nothing was sent
