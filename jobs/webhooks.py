"""Signed webhook POSTs, shared by alerts (`jobs.alerts`) and batch events (`jobs.batch_events`).

One format for every webhook genhub sends: a JSON body, `X-Genhub-Timestamp` (Unix seconds) and
`X-Genhub-Signature: sha256=HMAC_SHA256(secret, "<timestamp>.<body>")`. The receiver recomputes the
HMAC over the raw body and refuses old timestamps, so a captured POST cannot be replayed later.
Each send has a timeout and the HTTP seam's bounded retries; what still fails is re-delivered later
by the caller's schedule, up to GENHUB_ALERT_WEBHOOK_MAX_ATTEMPTS.
"""

import hashlib
import hmac
import ipaddress
import socket
import time
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings

from providers.http import HttpClient

# A send is retried this many times at once (5xx, connection trouble) before it counts as one failed attempt.
TRIES_PER_ATTEMPT = 3
# Re-deliveries back off from this, doubling per failed attempt, up to an hour.
REDELIVERY_BASE_SECONDS = 30
REDELIVERY_MAX_SECONDS = 3600


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 of "<timestamp>.<body>": the receiver recomputes it and rejects old timestamps."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def post_signed(*, url: str, body: bytes, secret: str, service: str, headers: dict | None = None) -> None:
    """POSTs `body` signed with `secret` (unsigned when there is none). Raises ProviderError on failure;
    its message names only the host (a webhook URL often carries its own credential in the path)."""
    timestamp = str(int(time.time()))
    sent = {"Content-Type": "application/json", "X-Genhub-Timestamp": timestamp, **(headers or {})}
    if secret:
        sent["X-Genhub-Signature"] = "sha256=" + signature(secret, timestamp, body)
    timeout = settings.GENHUB_ALERT_WEBHOOK_TIMEOUT
    http = HttpClient(service, read_timeout=timeout, connect_timeout=timeout, max_tries=TRIES_PER_ATTEMPT,
                      secret_path=True)
    # No redirects: a receiver must not be able to bounce genhub's POST to an address the URL rules refuse.
    http.request("POST", url, data=body, headers=sent, allow_redirects=False)


def redelivery_delay(attempts: int) -> timedelta:
    return timedelta(seconds=min(REDELIVERY_MAX_SECONDS, REDELIVERY_BASE_SECONDS * 2 ** max(0, attempts - 1)))


# --- where a user's webhook may point -------------------------------------------------------------


def url_problem(url: str) -> str | None:
    """Why genhub will not POST to this user-given URL, or None. Checked when the batch is created and
    again before every send (a name can resolve elsewhere later)."""
    if not isinstance(url, str) or not url.strip():
        return "must be a URL"
    if len(url) > 2000 or any(ch.isspace() or ord(ch) < 32 for ch in url):
        return "must be a URL of at most 2000 characters, without spaces"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "must be a valid URL (e.g. https://example.com/hooks/genhub)"
    allowed = ("https", "http") if settings.GENHUB_WEBHOOK_ALLOW_HTTP else ("https",)
    if parts.scheme not in allowed:
        return ("must be an https:// URL" if parts.scheme == "http" or not settings.GENHUB_WEBHOOK_ALLOW_HTTP
                else "must be an http:// or https:// URL")
    if not parts.hostname:
        return "must name a host (e.g. https://example.com/hooks/genhub)"
    if parts.username or parts.password:
        return "must not carry a user name or password; put a token in the path or rely on the signature"
    return address_problem(parts.hostname, port or (443 if parts.scheme == "https" else 80))


def address_problem(host: str, port: int) -> str | None:
    """A host that is (or resolves to) a loopback, private, link-local or otherwise non-public address
    would let a user make genhub call inside its own network; refused unless GENHUB_ALLOW_PRIVATE_DOWNLOADS."""
    if settings.GENHUB_ALLOW_PRIVATE_DOWNLOADS:
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return f"the host {host} could not be resolved"
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if not address.is_global or address.is_multicast:
            return f"the host {host} is a private or local address; webhooks go to public addresses only"
    return None
