"""A small threaded HTTP server that simulators build on: real sockets on 127.0.0.1, JSON helpers."""

import json
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # A client that went away mid-answer (a killed worker, a closed test) is what real servers see
        # every day, not a simulator bug: say nothing. Anything else is printed as usual.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class SimulatorHandler(BaseHTTPRequestHandler):
    """Routes every method to `self.simulator.handle(self)`; quiet unless the simulator is verbose."""

    protocol_version = "HTTP/1.1"
    simulator = None  # set per server
    tls_failed = False

    def setup(self):
        # Headers and body go out as two writes: without this, Nagle holds the second until the client's
        # delayed ACK (~40 ms per response), which a real server does not add.
        try:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        except OSError:
            pass  # the client is already gone: handling fails quietly below
        # TLS servers: the handshake runs here, in the connection's own thread, so a slow or refused
        # client never blocks the accept loop; a client that refuses our certificate gets nothing.
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError):
                self.tls_failed = True
                self.simulator.tls_refused()
            self.request.settimeout(None)
        super().setup()

    def handle(self):
        if not self.tls_failed:
            super().handle()

    def do_GET(self):
        self.simulator.handle(self)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    @property
    def path_only(self) -> str:
        return urlsplit(self.path).path

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def read_json(self):
        body = self.read_body()
        return json.loads(body) if body else {}

    def send_json(self, status: int, payload, headers: dict | None = None):
        self.send_bytes(status, json.dumps(payload).encode(), "application/json", headers)

    def send_bytes(self, status: int, body: bytes, content_type: str, headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format, *args):
        if getattr(self.simulator, "verbose", False):
            super().log_message(format, *args)


class Simulator:
    """Base for the simulated outside services. Subclasses implement `handle(request)`.

    `start()` binds a real port on 127.0.0.1 (0 = any free port) and serves from a daemon thread.
    """

    verbose = False

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, ssl_context: ssl.SSLContext | None = None):
        handler = type(f"{type(self).__name__}Handler", (SimulatorHandler,), {"simulator": self})
        self._server = _Server((host, port), handler)
        self._thread = None
        self.scheme = "https" if ssl_context else "http"
        self.tls_refusals = 0  # handshakes that failed (the client refused our certificate, or spoke plain HTTP)
        if ssl_context:
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True,
                                                          do_handshake_on_connect=False)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def handle(self, request: SimulatorHandler):
        raise NotImplementedError

    def tls_refused(self):
        self.tls_refusals += 1

    def _take_fault(self, kind: str) -> bool:
        """Uses up one injected fault of `kind`, if any is left. Subclasses keep `_faults` (a Counter)
        and the `_lock` guarding it."""
        with self._lock:
            if self._faults[kind] > 0:
                self._faults[kind] -= 1
                return True
            return False
