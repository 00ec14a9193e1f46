"""Request bodies are measured while they arrive, and refused the moment they pass a limit.

`UploadLimitHandler` runs first among Django's upload handlers (settings.FILE_UPLOAD_HANDLERS): it
refuses a multipart body whose Content-Length is over `GENHUB_MAX_UPLOAD_BYTES` before reading any of
it, counts files, and stops a file as soon as it passes its limit (an image, a ZIP, a rows file),
so a 1 GB "image" costs the server its first few megabytes, not a gigabyte of memory. What it
refuses is kept on the request (`upload_errors`) in the batch error format, for the API and the page
to answer with. Storing the files it lets through is left to the handlers after it (small ones in
memory, the rest spooled to disk by Django's TemporaryFileUploadHandler).

`BoundedJSONParser` does the same for JSON bodies, which DRF would otherwise read whole, and turns
input nested too deeply for Python's parser into a 400 instead of a RecursionError.
"""

import json

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import QueryDict
from django.utils.datastructures import MultiValueDict
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.settings import api_settings

# Django's own refusals of a request body (raised when request.POST/FILES is first read).
BODY_LIMIT_ERRORS = (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)
# After refusing a file, the rest of the body is read and dropped when this little is left, so the
# client surely gets the answer; past it the connection is dropped unread (a client still sending
# may then see a reset instead of the 400).
DRAIN_BYTES = 16 * 1024 * 1024
_ERRORS_ATTR = "_genhub_upload_errors"


def upload_errors(request) -> list[dict]:
    """What the upload handler refused in this request, in the batch error format ([] when nothing)."""
    return list(getattr(request, _ERRORS_ATTR, None) or [])


def body_limit_error(exc: Exception) -> dict:
    """Django's own body limits, said the way genhub says its limits."""
    if isinstance(exc, TooManyFilesSent):
        return {"field": "images", "message": f"too many files in one request: the limit is "
                                              f"{settings.DATA_UPLOAD_MAX_NUMBER_FILES}"}
    if isinstance(exc, TooManyFieldsSent):
        return {"field": "request", "message": f"too many fields in one request: the limit is "
                                               f"{settings.DATA_UPLOAD_MAX_NUMBER_FIELDS}"}
    return {"field": "request", "message": f"the fields other than files are larger than "
                                           f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes"}


def file_limit(field_name: str, file_name: str) -> int:
    if field_name == "images":
        is_zip = (file_name or "").lower().endswith(".zip")
        return settings.GENHUB_MAX_ARCHIVE_BYTES if is_zip else settings.GENHUB_MAX_IMAGE_BYTES
    return settings.GENHUB_MAX_ROWS_BYTES  # a CSV/TSV/JSON rows file (or a field nobody asked for)


class UploadLimitHandler(FileUploadHandler):
    def __init__(self, request=None):
        super().__init__(request)
        self.body_length = 0
        self.files = 0
        self.received = 0
        self.seen = 0
        self.limit = 0

    def _refuse(self, error: dict) -> None:
        errors = getattr(self.request, _ERRORS_ATTR, None)
        if errors is None:
            errors = []
            setattr(self.request, _ERRORS_ATTR, errors)
        errors.append(error)

    def _stop(self, error: dict):
        self._refuse(error)
        return StopUpload(connection_reset=self.body_length - self.received > DRAIN_BYTES)

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        self.body_length = content_length or 0
        limit = settings.GENHUB_MAX_UPLOAD_BYTES
        if self.body_length > limit:
            self._refuse({"field": "request", "message": f"the request is {self.body_length} bytes, the limit "
                                                         f"is {limit} bytes; send the batch in parts"})
            # Parsed as empty, without reading a byte of the body.
            return QueryDict(encoding=encoding), MultiValueDict()
        return None

    def new_file(self, field_name, file_name, *args, **kwargs):
        super().new_file(field_name, file_name, *args, **kwargs)
        self.files += 1
        self.limit, self.seen = file_limit(field_name, file_name), 0

    def receive_data_chunk(self, raw_data, start):
        # Stopped here, not in new_file: Django closes the handlers' current files on a stop, and only
        # once every handler has started this file is that not a file already received.
        if self.files > settings.GENHUB_MAX_BATCH_ITEMS + 1:  # the images and one rows file
            raise self._stop({"field": "images", "message": f"too many files in one request: the limit is "
                                                            f"{settings.GENHUB_MAX_BATCH_ITEMS} images (put more "
                                                            "in a ZIP, or split the batch)"})
        self.seen += len(raw_data)
        self.received += len(raw_data)
        if self.seen > self.limit:
            raise self._stop({"field": self.field_name if self.field_name == "images" else "items",
                              "item": self.file_name,
                              "message": f"too large: more than {self.limit} bytes, the limit for this file; "
                                         "the upload was stopped there"})
        return raw_data

    def file_complete(self, file_size):
        return None  # the handlers after this one store the file


def _reject_constant(value):
    raise ValueError(f"{value} is not valid JSON")


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser, reading at most DATA_UPLOAD_MAX_MEMORY_SIZE bytes."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        except ValueError:
            declared = 0
        if limit is not None and declared > limit:
            raise ParseError(f"the JSON body is {declared} bytes, the limit is {limit} bytes")
        body = stream.read(limit + 1 if limit is not None else -1) if stream is not None else b""
        if limit is not None and len(body) > limit:
            raise ParseError(f"the JSON body is larger than {limit} bytes")
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = body.decode(encoding)
            if api_settings.STRICT_JSON:
                return json.loads(text, parse_constant=_reject_constant)
            return json.loads(text)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ParseError(f"JSON parse error - {exc}") from None
