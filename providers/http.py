"""The one HTTP seam: every call to the outside world goes through `HttpClient.request`.

It always sets a (connect, read) timeout, retries only what is safe and transient (connection
errors, 429 with backoff, 5xx) a bounded number of times, and turns every failure into a
`ProviderError` that carries the status and a short excerpt of the body. Secrets live in the
session headers and never appear in error messages.
"""

import logging
import random
import threading
import time
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import requests
import urllib3
from django.conf import settings

from providers import addresses
from providers.errors import PermanentError, ProviderError, TransientError

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = {429, 500, 502, 503, 504}


def _body_excerpt(response: requests.Response, limit: int = 300) -> str:
    try:
        text = response.text
    except Exception:  # undecodable body: the status says enough
        return ""
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "")


def _retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class HttpClient:
    """A requests session with timeouts, bounded retries and error classification.

    `service` names the remote in messages ("fal", "vast.ai", "SwarmUI").
    """

    def __init__(self, service: str, *, headers: dict | None = None, connect_timeout: float | None = None,
                 read_timeout: float | None = None, max_tries: int | None = None, backoff: float | None = None,
                 secret_path: bool = False, public_only: bool = False, pinned_certificate: str | None = None):
        self.service = service
        # `public_only`: the address came from a remote party's reply (a fal file URL, a vast instance IP),
        # so every connection is checked against `providers.addresses` after it is made.
        # `pinned_certificate`: HTTPS trusts exactly this certificate (providers/instance_tls.py).
        self.public_only = public_only
        self.pinned_certificate = pinned_certificate
        # Some URLs carry their credential in the path (webhooks): then only the host is ever shown.
        self.secret_path = secret_path
        self.connect_timeout = connect_timeout or settings.HTTP_CONNECT_TIMEOUT
        self.read_timeout = read_timeout or settings.HTTP_READ_TIMEOUT
        self.max_tries = max_tries or settings.HTTP_MAX_TRIES
        self.backoff = settings.HTTP_BACKOFF_SECONDS if backoff is None else backoff
        self._headers = dict(headers or {})
        # requests.Session is not guaranteed thread-safe; pollers fan out over threads.
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            if self.public_only or self.pinned_certificate:
                adapter = addresses.GuardedAdapter(public_only=self.public_only,
                                                   pinned_certificate=self.pinned_certificate)
                session.mount("https://", adapter)
                session.mount("http://", adapter)
                # A proxy from the environment would make the proxy the peer that is checked, and would
                # see the pinned channel's endpoint: these calls go direct.
                session.trust_env = False
            session.headers.update(self._headers)
            session.headers["User-Agent"] = "genhub/1.0"
            self._local.session = session
        return session

    def request(self, method: str, url: str, *, retry: bool = True, idempotent: bool = True, ok_statuses=(),
                read_timeout: float | None = None, **kwargs) -> requests.Response:
        """Send one request. Raises ProviderError unless the status is 2xx or in `ok_statuses`.

        `retry=False`: nothing is repeated; a connection error is still reported as transient and the
        caller decides. `idempotent=False` (a paid submit): only failures that prove the remote did
        not act are retried (a refused connection, 429); a read timeout or 5xx after the body was
        sent is raised at once, because repeating it could buy the same work twice.
        """
        tries = self.max_tries if retry else 1
        timeout = (self.connect_timeout, read_timeout or self.read_timeout)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.session.request(method, url, timeout=timeout, **kwargs)
            except requests.exceptions.SSLError:
                # The certificate is not the trusted (pinned) one: nothing was sent, and asking again
                # will not change who answers.
                raise TransientError(f"{self.service}: {method} {self._shown(url)} refused: the server's TLS "
                                     "certificate is not the one genhub trusts for it", code="tls_refused",
                                     transport=True) from None
            except requests.RequestException as exc:
                error = TransientError(
                    f"{self.service}: {method} {self._shown(url)} failed: {type(exc).__name__}",
                    code="connection_error", transport=True,
                )
                never_sent = _never_connected(exc)
            else:
                if 200 <= response.status_code < 300 or response.status_code in ok_statuses:
                    return response
                error = self.classify(response, method, url)
                never_sent = response.status_code == 429
            if error.permanent or attempt >= tries or not (idempotent or never_sent):
                # Whether the remote may have acted on this last try: a paid create must then be looked up,
                # not repeated.
                error.reached_remote = not never_sent
                raise error
            delay = error.retry_after if error.retry_after is not None else self.backoff * 2 ** (attempt - 1)
            delay = min(delay, 60.0) * (1 + random.random() * 0.1)
            log.info("%s; retrying in %.2fs (attempt %d/%d)", error.message, delay, attempt, tries)
            time.sleep(delay)

    def download(self, url: str, *, max_bytes: int | None = None, read_timeout: float | None = None,
                 **kwargs) -> bytes:
        """GET a file, streamed, refusing it once it passes `max_bytes` (GENHUB_MAX_DOWNLOAD_BYTES).

        The body is never held beyond the limit: a declared Content-Length over it is refused before
        reading, and an undeclared or lying one is cut off at the first chunk past it.
        """
        limit = max_bytes or settings.GENHUB_MAX_DOWNLOAD_BYTES
        response = self.request("GET", url, stream=True, read_timeout=read_timeout, **kwargs)
        return self.read_limited(response, url, limit)

    def read_limited(self, response: requests.Response, url: str, limit: int, *, deadline: float | None = None,
                     limit_name: str = "GENHUB_MAX_DOWNLOAD_BYTES", code: str = "output_too_large") -> bytes:
        """The body of a streamed response, refused past `limit` bytes or (a `time.monotonic()` value)
        past `deadline`: a server that trickles a byte at a time never trips the read timeout. Closes it."""
        try:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise self._too_large(url, limit, f"it announces {int(declared)} bytes", limit_name, code)
            chunks, size = [], 0
            try:
                for chunk in _chunks(response, deadline):
                    size += len(chunk)
                    if size > limit:
                        raise self._too_large(url, limit, "it sent more", limit_name, code)
                    if deadline is not None and time.monotonic() > deadline:
                        raise TransientError(f"{self.service}: GET {self._shown(url)} took too long to send its "
                                             "body", code="timeout", transport=True)
                    chunks.append(chunk)
            except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
                raise TransientError(f"{self.service}: GET {self._shown(url)} failed while reading: "
                                     f"{type(exc).__name__}", code="connection_error", transport=True) from None
            return b"".join(chunks)
        finally:
            response.close()

    def _too_large(self, url: str, limit: int, detail: str, limit_name: str, code: str) -> PermanentError:
        return PermanentError(f"{self.service}: GET {self._shown(url)} refused: the file is larger than the "
                              f"{limit}-byte limit ({limit_name}); {detail}", code=code)

    def _shown(self, url: str) -> str:
        parts = urlsplit(url)
        if self.secret_path:
            return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}/…"
        return _safe_url(url)

    def classify(self, response: requests.Response, method: str, url: str) -> ProviderError:
        status = response.status_code
        message = f"{self.service}: {method} {self._shown(url)} returned HTTP {status}: {_body_excerpt(response)}"
        if status == 429:
            retry_after = _retry_after_seconds(response)
            return TransientError(message, code="rate_limited", status=status, transport=True,
                                  retry_after=retry_after if retry_after is not None else max(self.backoff, 1.0))
        if status in RETRYABLE_STATUSES:
            return TransientError(message, code=f"http_{status}", status=status, transport=True)
        if status in (401, 403):
            return PermanentError(message, code="unauthorized", status=status)
        return ProviderError(message, code=f"http_{status}", permanent=400 <= status < 500, status=status)


def _chunks(response: requests.Response, deadline: float | None):
    """The body as it arrives. `iter_content` waits for a whole chunk: a server that sends a byte at a time
    would hold it past any deadline without ever tripping the read timeout. With a deadline the body is
    read with `read1`, which returns whatever one receive got, so the deadline is looked at often."""
    if deadline is None:
        yield from response.iter_content(chunk_size=1 << 16)
        return
    while chunk := response.raw.read1(1 << 16, decode_content=True):
        yield chunk


def _never_connected(exc: requests.RequestException) -> bool:
    """True when the request cannot have reached the remote (refused or timed-out connect)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _safe_url(url: str) -> str:
    """The URL without its query string (which may carry tokens) or a user:password part."""
    parts = urlsplit(url)
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else parts.netloc
    return f"{parts.scheme}://{netloc}{parts.path}"
