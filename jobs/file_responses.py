"""Stored files (videos, posters, input images, ZIP exports) served to whoever the view has already
checked may see them: byte ranges for seeking and resuming, HEAD, and the hand-off to the proxy.

Every view decides *who* may have a file; this module only decides *how* its bytes go out. With
`GENHUB_ACCEL_REDIRECT_PREFIX` set, genhub answers with an empty response carrying `X-Accel-Redirect`
and nginx sends the file from an `internal` location (ranges included), so a gunicorn worker is never
tied up by a slow download; without it, genhub streams the bytes itself.
"""

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import quote

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import HttpResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header, http_date, quote_etag

CHUNK_BYTES = 256 * 1024
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class Unsatisfiable(Exception):
    """The range asked for lies wholly outside the file (416)."""


def parse_range(header: str, size: int) -> ByteRange | None:
    """The one byte range a `Range` header asks for, or None to send the whole file.

    Only single ranges are served: a malformed header or a multi-range request is answered with the
    whole file, which RFC 9110 §14.2 allows (a server may ignore Range). `bytes=500-` runs to the end;
    `bytes=-500` is the last 500 bytes; an end past the file is cut to the file.
    """
    match = _RANGE.match(header or "")
    if not match:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    if last and int(last) < start:
        return None  # syntactically invalid: ignored, like a header that is not there
    if start >= size:
        raise Unsatisfiable
    return ByteRange(start, min(int(last), size - 1) if last else size - 1)


def _etag(name: str, size: int, modified) -> str:
    # Stored names are unique per file and never rewritten in place; size and time catch a replacement.
    # (A digest, not hash(): every worker process must give the same file the same tag.)
    stamp = f"{name}|{size}|{modified.timestamp() if modified else ''}"
    return quote_etag(hashlib.sha256(stamp.encode()).hexdigest()[:20])


def _modified_time(name: str):
    try:
        return default_storage.get_modified_time(name)
    except (NotImplementedError, OSError):
        return None


def _read(source, byte_range: ByteRange):
    source.seek(byte_range.start)
    left = byte_range.length
    while left > 0:
        chunk = source.read(min(CHUNK_BYTES, left))
        if not chunk:
            return
        left -= len(chunk)
        yield chunk


def stored_file_response(request, name: str, *, content_type: str, filename: str | None = None,
                         as_attachment: bool = False, cache_control: str = "private, no-cache") -> HttpResponse:
    """The stored file `name` as the answer to `request` (GET or HEAD), honouring a single `Range`."""
    size = default_storage.size(name)
    modified = _modified_time(name)
    headers = {"Content-Type": content_type, "Accept-Ranges": "bytes", "Cache-Control": cache_control,
               "ETag": _etag(name, size, modified)}
    if modified:
        headers["Last-Modified"] = http_date(modified.timestamp())
    if filename:
        headers["Content-Disposition"] = content_disposition_header(as_attachment, filename)

    prefix = settings.GENHUB_ACCEL_REDIRECT_PREFIX
    if prefix:
        # The proxy sends the bytes (and handles Range and HEAD itself); genhub has checked ownership.
        headers["X-Accel-Redirect"] = prefix.rstrip("/") + "/" + quote(name)
        headers.pop("Accept-Ranges")  # the proxy says what it supports
        return HttpResponse(status=200, headers=headers)

    byte_range = None
    if_range = request.headers.get("If-Range")
    # A resume against a different file must get the whole new file, not a splice of two.
    if not if_range or if_range in (headers["ETag"], headers.get("Last-Modified")):
        try:
            byte_range = parse_range(request.headers.get("Range", ""), size)
        except Unsatisfiable:
            return HttpResponse(status=416, headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes",
                                                     "Content-Type": "text/plain; charset=utf-8"})
    status = 206 if byte_range else 200
    byte_range = byte_range or ByteRange(0, size - 1)
    headers["Content-Length"] = str(max(0, byte_range.length))
    if status == 206:
        headers["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end}/{size}"
    if request.method == "HEAD" or size == 0:
        return HttpResponse(status=status, headers=headers)
    # Opened now, not when the body is first read: a file replaced in between (a newer export of the
    # batch) is still the one these headers describe.
    source = default_storage.open(name, "rb")
    response = StreamingHttpResponse(_read(source, byte_range), status=status, headers=headers)
    response._resource_closers.append(source.close)
    return response
