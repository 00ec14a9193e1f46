"""Where an item's image comes from when it is given by URL: the rule at intake, and reading the bytes later.

Two kinds of source:

- `https://…` (plain `http://` only with GENHUB_IMAGE_URL_ALLOW_HTTP, for development): any host the
  address rule of `providers.addresses` allows, the same rule as provider downloads. Every redirect hop
  is checked by that rule before it is requested, and every connection on the peer it really reached
  (no DNS rebinding), so a public URL cannot bounce genhub to a loopback, private or link-local address.
- `s3://<bucket>/<key>`: only the configured bucket (AWS_STORAGE_BUCKET_NAME), read through boto3 with
  the object-storage settings. The endpoint is the operator's, so it is not held to the address rule.

Either way the body is refused once it passes GENHUB_MAX_IMAGE_BYTES while it streams, and the whole fetch
has GENHUB_IMAGE_FETCH_TIMEOUT_SECONDS. What the bytes are (type, decode) is `jobs.images.check_image`'s to
judge, exactly as for uploads. Nothing here touches the database.
"""

import threading
import time
from functools import lru_cache
from urllib.parse import unquote, urljoin, urlsplit

from django.conf import settings

from providers import addresses
from providers.errors import ProviderError
from providers.http import HttpClient

REDIRECTS = (301, 302, 303, 307, 308)
MAX_URL_LENGTH = 2048


class ImageUnavailable(Exception):
    """The image could not be had; `message` says what failed (the HTTP status, the check), `status` the
    HTTP status when there was one. Never carries the URL's query string (it may hold a signature)."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status


def shown_url(url: str) -> str:
    """The URL as it may appear in errors and pages: no query string, no user:password."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        return f"s3://{parts.netloc}{parts.path}"
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def source_name(url: str) -> str:
    """A name for the job (its `input_name`, the stem of its download's file name): the URL's last segment."""
    path = urlsplit(url).path
    name = unquote(path.rstrip("/").rsplit("/", 1)[-1]).replace("\x00", "")
    return (name or urlsplit(url).hostname or "image")[:255]


def image_url_problem(url) -> str | None:
    """Why `url` cannot be an item's image, or None. No network: the addresses a name resolves to are
    checked when genhub connects (an IP literal is refused here already)."""
    if not isinstance(url, str) or not url.strip():
        return "image_url must be text"
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        return f"image_url is longer than {MAX_URL_LENGTH} characters"
    if not url.isprintable():
        return "image_url must not contain control characters"
    if url.lower().startswith("s3://"):
        return _s3_problem(url)  # an S3 key is any text, spaces included (as the AWS CLI takes it)
    if " " in url:
        return "image_url must not contain spaces (encode them as %20)"
    try:
        addresses.check_url(url, what="image_url", allow_http=settings.GENHUB_IMAGE_URL_ALLOW_HTTP)
    except addresses.UntrustedAddress as exc:
        return exc.message + (" (or s3://<bucket>/<key>)" if "scheme" in exc.message else "")
    return None


def _s3_location(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.netloc, parts.path.lstrip("/")


def _s3_problem(url: str) -> str | None:
    bucket, key = _s3_location(url)
    configured = settings.AWS_STORAGE_BUCKET_NAME
    if not configured:
        return "image_url: s3:// URLs need a configured bucket (AWS_STORAGE_BUCKET_NAME is unset on this server)"
    if bucket != configured:
        return f"image_url: s3:// URLs must name the bucket {configured}, not {bucket or '(none)'}"
    if not key or urlsplit(url).query or urlsplit(url).fragment:
        return "image_url: give the object as s3://<bucket>/<key>"
    return None


def fetch_image_bytes(url: str) -> bytes:
    """The bytes at `url` (checked by `image_url_problem` at intake). Raises ImageUnavailable."""
    limit = settings.GENHUB_MAX_IMAGE_BYTES
    if url.lower().startswith("s3://"):
        return read_s3_object(url, max_bytes=limit)
    return _fetch_http(url, limit)


# --- http(s) ---------------------------------------------------------------------------------------

_client = None
_client_lock = threading.Lock()


def _http_client() -> HttpClient:
    """One client (its sessions are per thread): `public_only` checks every connection's real peer."""
    global _client
    with _client_lock:
        if _client is None:
            _client = HttpClient("image source", public_only=True)
        return _client


def _fetch_http(url: str, limit: int) -> bytes:
    timeout = settings.GENHUB_IMAGE_FETCH_TIMEOUT_SECONDS
    deadline = time.monotonic() + timeout
    client = _http_client()
    current = url
    for hop in range(settings.GENHUB_IMAGE_FETCH_MAX_REDIRECTS + 1):
        # The first URL was checked at intake; a redirect's target is someone else's choice: check it too.
        try:
            addresses.check_url(current, what="image_url" if not hop else "a redirect of image_url",
                                allow_http=settings.GENHUB_IMAGE_URL_ALLOW_HTTP)
        except addresses.UntrustedAddress as exc:
            target = "" if not hop else f" (redirected to {shown_url(current)})"
            raise ImageUnavailable(f"{exc.message}{target}") from None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ImageUnavailable(f"timed out after {timeout:g}s (GENHUB_IMAGE_FETCH_TIMEOUT_SECONDS)")
        try:
            response = client.request("GET", current, stream=True, allow_redirects=False, ok_statuses=REDIRECTS,
                                      read_timeout=remaining)
            if response.status_code in REDIRECTS:
                location = response.headers.get("Location", "")
                response.close()
                if not location:
                    raise ImageUnavailable(f"HTTP {response.status_code} redirect without a Location",
                                           status=response.status_code)
                current = urljoin(current, location)
                continue
            return client.read_limited(response, current, limit, deadline=deadline,
                                       limit_name="GENHUB_MAX_IMAGE_BYTES", code="too_large")
        except addresses.UntrustedAddress as exc:
            target = "" if not hop else f" (redirected to {shown_url(current)})"
            raise ImageUnavailable(f"{exc.message}{target}") from None
        except ProviderError as exc:
            raise ImageUnavailable(_reason(exc, timeout), status=exc.status) from None
    raise ImageUnavailable(f"more than {settings.GENHUB_IMAGE_FETCH_MAX_REDIRECTS} redirects "
                           "(GENHUB_IMAGE_FETCH_MAX_REDIRECTS)")


def _reason(exc: ProviderError, timeout: float) -> str:
    message = exc.message.removeprefix("image source: ")
    if exc.code == "timeout" or "Timeout" in message:
        return f"timed out after {timeout:g}s (GENHUB_IMAGE_FETCH_TIMEOUT_SECONDS): {message}"
    return message


# --- s3:// -----------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _s3_client(endpoint_url, region_name, timeout):
    import boto3
    from botocore.config import Config

    # boto3 clients are thread-safe (sessions are not): one per configuration, made on first use.
    return boto3.session.Session().client(
        # The keys are not settings: boto3 reads them (or a role) from the environment, as the storage does.
        "s3", endpoint_url=endpoint_url, region_name=region_name,
        config=Config(connect_timeout=settings.HTTP_CONNECT_TIMEOUT, read_timeout=timeout,
                      retries={"max_attempts": settings.HTTP_MAX_TRIES, "mode": "standard"}))


def read_s3_object(url: str, *, max_bytes: int) -> bytes:
    """The object `s3://<bucket>/<key>` of the configured bucket, refused past `max_bytes` while it streams.

    The one place genhub reads an item's image from S3: object storage (django-storages) configures
    the same AWS_* settings."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _s3_location(url)
    problem = _s3_problem(url)
    if problem:
        raise ImageUnavailable(problem)
    timeout = settings.GENHUB_IMAGE_FETCH_TIMEOUT_SECONDS
    deadline = time.monotonic() + timeout
    client = _s3_client(settings.AWS_S3_ENDPOINT_URL, settings.AWS_S3_REGION_NAME, timeout)
    try:
        reply = client.get_object(Bucket=bucket, Key=key)
        body = reply["Body"]
        try:
            declared = reply.get("ContentLength")
            if declared is not None and declared > max_bytes:
                raise ImageUnavailable(f"too large: the object is {declared} bytes, the limit is {max_bytes} bytes "
                                       "(GENHUB_MAX_IMAGE_BYTES)")
            chunks, size = [], 0
            for chunk in body.iter_chunks(1 << 16):
                size += len(chunk)
                if size > max_bytes:
                    raise ImageUnavailable(f"too large: more than {max_bytes} bytes (GENHUB_MAX_IMAGE_BYTES)")
                if time.monotonic() > deadline:
                    raise ImageUnavailable(f"timed out after {timeout:g}s (GENHUB_IMAGE_FETCH_TIMEOUT_SECONDS)")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            body.close()
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = exc.response.get("Error", {}).get("Code", "error")
        raise ImageUnavailable(f"S3 GET {shown_url(url)} returned HTTP {status} ({code})", status=status) from None
    except BotoCoreError as exc:
        raise ImageUnavailable(f"S3 GET {shown_url(url)} failed: {type(exc).__name__}") from None
