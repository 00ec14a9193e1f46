"""A real HTTP server on a loopback address that serves the images items name by URL, and the ways that goes wrong."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from providers.simulators.media import make_image


class ImageServer:
    """Routes: any path in `files` (200 with its bytes); `/missing` 404; `/page.html` a web page, not an
    image; `/huge` a body that never ends (no Content-Length); `/huge-declared` a Content-Length over any
    limit; `/trickle` a byte every 50 ms, forever; `/slow` headers only once the test is over (or
    `release_after` files were served); `/to/<anything>` 302 to `redirects[<anything>]`. `hits` counts the
    requests per path."""

    def __init__(self, host: str = "127.0.0.1"):
        self.files = {"/still.png": make_image(color=(200, 40, 40)), "/other.png": make_image(color=(20, 160, 90))}
        self.redirects: dict[str, str] = {}
        self.hits: dict[str, int] = {}
        self.connections = 0
        self.released = threading.Event()
        # `/slow` answers once this many files have been served (or when the server stops).
        self.release_after: int | None = None
        self.served = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                server.connections += 1
                super().setup()

            def do_GET(self):  # noqa: N802 — the name http.server calls
                path = self.path.split("?", 1)[0]
                server.hits[path] = server.hits.get(path, 0) + 1
                if path in server.files:
                    self._send(200, server.files[path], "image/png")
                    server.served += 1
                    if server.release_after is not None and server.served >= server.release_after:
                        server.released.set()
                elif path == "/missing":
                    self._send(404, b"<h1>Not Found</h1>", "text/html")
                elif path == "/page.html":
                    self._send(200, b"<html><body>a page about a still</body></html>", "text/html")
                elif path == "/huge-declared":
                    self.send_response(200)
                    self.send_header("Content-Length", str(10**12))
                    self.end_headers()
                    self._pour()
                elif path == "/huge":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    self._pour()
                elif path == "/trickle":
                    # A byte at a time, each well within any read timeout, for as long as the client listens.
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    try:
                        while not server.released.wait(0.05):
                            self.wfile.write(b"\0")
                            self.wfile.flush()
                    except OSError:
                        pass
                elif path == "/slow":
                    server.released.wait(60)
                    self._send(200, server.files["/still.png"], "image/png")
                elif path.startswith("/to/") and path[4:] in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[path[4:]])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._send(404, b"no such route", "text/plain")

            def _send(self, status, body, content_type):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _pour(self):
                """PNG-looking bytes until the client hangs up (the size limit), or far past any limit."""
                chunk = b"\x89PNG" + b"\0" * (64 * 1024 - 4)
                try:
                    for _ in range(2000):
                        self.wfile.write(chunk)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client that stops reading (a size limit, a timeout) breaks the pipe: expected

        self.server = Server((host, 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
