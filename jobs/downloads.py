"""The one place a download leaves genhub: after a view has checked who may have the file.

With object storage the bytes never pass through a genhub process: the answer is a 302 to a presigned
URL for that one object, valid for GENHUB_S3_PRESIGN_SECONDS, carrying the content type and
disposition S3 must answer with. S3 serves `Range` and `HEAD` on that URL itself, so players seek and
downloads resume there. The URL is a bearer capability until it expires; it is sent only to the
user the view has already allowed, and marked `no-store` so no shared cache keeps it.

On a local disk the file is served as `jobs.file_responses` does it (byte ranges, X-Accel-Redirect).
"""

from django.conf import settings
from django.http import HttpResponse, HttpResponseRedirect
from django.utils.http import content_disposition_header

from genhub import storage
from jobs.file_responses import stored_file_response


def serve_stored(request, name: str, *, content_type: str, filename: str | None = None,
                 as_attachment: bool = False, cache_control: str = "private, no-cache") -> HttpResponse:
    """The stored file `name` as the answer to an allowed GET or HEAD."""
    if not storage.is_object_storage():
        return stored_file_response(request, name, content_type=content_type, filename=filename,
                                    as_attachment=as_attachment, cache_control=cache_control)
    disposition = content_disposition_header(as_attachment, filename) if filename else None
    url = storage.presigned_url(name, seconds=settings.GENHUB_S3_PRESIGN_SECONDS, content_type=content_type,
                                disposition=disposition, public_endpoint=settings.GENHUB_S3_PUBLIC_ENDPOINT_URL)
    response = HttpResponseRedirect(url)
    # The URL itself is the permission: no cache may keep it past this user and this moment.
    response["Cache-Control"] = "private, no-store"
    return response
