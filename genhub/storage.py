"""Where genhub keeps its files, and the few operations that differ between a local disk and S3.

Everything genhub stores (input images, videos, posters, ZIP exports) goes through Django's
`default_storage`. It is a `FileSystemStorage` on `MEDIA_ROOT` unless object storage is configured
(`GENHUB_STORAGE=s3`, or `AWS_STORAGE_BUCKET_NAME` set): then an S3-compatible bucket through
django-storages, which every web and cluster host shares.

Three things cannot be said in the `Storage` API alone and live here:

- `read_chunks`: django-storages' S3 file object downloads the whole object before its first read;
  this reads it from the response body a chunk at a time instead.
- `atomic_writer`: a file that appears complete or not at all — a renamed temporary file on disk, a
  multipart upload (visible only once completed) in S3 — so a reader never sees half of one.
- `presigned_url`: a short-lived signed URL for one object, for downloads handed to S3 after genhub
  has checked who may have the file.

The access keys are never read into Django's settings: boto3 takes them from its own sources
(`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` in the environment, an instance role, …), so neither a
settings dump nor an error page can show them.
"""

import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

LOCAL, S3 = "local", "s3"
BACKENDS = (LOCAL, S3)
S3_BACKEND = "storages.backends.s3.S3Storage"
# S3 needs every part of a multipart upload but the last to be at least 5 MiB.
MULTIPART_PART_BYTES = 8 * 1024 * 1024


class StorageConfigError(ImproperlyConfigured):
    """The storage settings contradict each other (raised while settings load)."""


def default_backend(*, kind: str, bucket: str, endpoint_url: str, region: str, addressing_style: str,
                    location: str, presign_seconds: int) -> dict:
    """The `STORAGES["default"]` entry for the chosen backend (called from settings.py)."""
    if kind not in BACKENDS:
        raise StorageConfigError(f"GENHUB_STORAGE must be one of {', '.join(BACKENDS)}, not {kind!r}")
    if kind == LOCAL:
        return {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    if not bucket:
        raise StorageConfigError("GENHUB_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME")
    if addressing_style not in ("", "auto", "virtual", "path"):
        raise StorageConfigError(f"AWS_S3_ADDRESSING_STYLE must be auto, virtual or path, not {addressing_style!r}")
    if presign_seconds < 1:
        raise StorageConfigError("GENHUB_S3_PRESIGN_SECONDS must be at least 1")
    options = {
        "bucket_name": bucket,
        "endpoint_url": endpoint_url or None,
        "region_name": region or None,
        "addressing_style": addressing_style or None,
        "location": location.strip("/"),
        # Media is private: no public ACL, every URL signed and short-lived.
        "default_acl": None,
        "querystring_auth": True,
        "querystring_expire": presign_seconds,
        # Never overwrite: two holders of one job storing at once must not replace each other's file (the
        # loser deletes what it wrote). A taken name gets a suffix, as on the local disk.
        "file_overwrite": False,
        "signature_version": "s3v4",
    }
    return {"BACKEND": S3_BACKEND, "OPTIONS": options}


def _storage():
    from django.core.files.storage import default_storage

    return default_storage


def is_object_storage(storage=None) -> bool:
    """True when files live in S3 (shared by every host), False for a local disk."""
    from storages.backends.s3 import S3Storage

    storage = storage or _storage()
    return isinstance(getattr(storage, "_wrapped", storage), S3Storage) or isinstance(storage, S3Storage)


def _s3_target(name: str):
    storage = _storage()
    from storages.utils import clean_name

    return storage, storage.connection.meta.client, storage.bucket_name, storage._normalize_name(clean_name(name))


def read_chunks(name: str, chunk_bytes: int) -> Iterator[bytes]:
    """The stored file's bytes, `chunk_bytes` at a time, never the whole file in memory."""
    if not is_object_storage():
        with _storage().open(name, "rb") as source:
            while chunk := source.read(chunk_bytes):
                yield chunk
        return
    _storage_, client, bucket, key = _s3_target(name)
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        yield from body.iter_chunks(chunk_bytes)
    finally:
        body.close()


class _LocalWriter:
    """A temporary file beside the target, renamed onto it when complete (rename is atomic)."""

    def __init__(self, name: str):
        self.target = Path(_storage().path(name))
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.target.with_name(f".{self.target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
        self.handle = open(self.partial, "wb")

    def write(self, data: bytes) -> None:
        self.handle.write(data)

    def commit(self) -> None:
        self.handle.close()
        os.replace(self.partial, self.target)

    def abort(self) -> None:
        self.handle.close()
        self.partial.unlink(missing_ok=True)


class _S3Writer:
    """A multipart upload: S3 shows the object only once it is completed, whole."""

    def __init__(self, name: str):
        _storage_, self.client, self.bucket, self.key = _s3_target(name)
        self.upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)["UploadId"]
        self.parts: list[dict] = []
        self.buffer = bytearray()

    def write(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= MULTIPART_PART_BYTES:
            self._flush()

    def _flush(self) -> None:
        number = len(self.parts) + 1
        etag = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                       PartNumber=number, Body=bytes(self.buffer))["ETag"]
        self.parts.append({"ETag": etag, "PartNumber": number})
        self.buffer = bytearray()

    def commit(self) -> None:
        if self.buffer or not self.parts:  # the last part may be small; an empty file is one empty part
            self._flush()
        self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                              MultipartUpload={"Parts": self.parts})

    def abort(self) -> None:
        # Uploaded parts are billed storage until aborted (or a bucket lifecycle rule removes them).
        self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)


@contextmanager
def atomic_writer(name: str):
    """Writes the stored file `name` (replacing it) all or nothing: committed when the block ends
    normally, discarded when it raises — including a generator closed halfway (GeneratorExit)."""
    writer = _S3Writer(name) if is_object_storage() else _LocalWriter(name)
    try:
        yield writer
    except BaseException:
        try:
            writer.abort()
        except Exception:  # noqa: BLE001 - the error that matters is the one that stopped the write
            pass
        raise
    writer.commit()


def presigned_url(name: str, *, seconds: int, content_type: str, disposition: str | None,
                  public_endpoint: str = "") -> str:
    """A GET URL for the object valid for `seconds`; S3 answers it with these response headers.

    `public_endpoint`: where clients reach the object store when genhub reaches it at another address
    (a MinIO at http://minio:9000 inside the deployment, https://media.example.com outside). The URL
    must be signed for the host the client will send (SigV4 signs it), so it is signed for that one.
    """
    parameters = {"ResponseContentType": content_type}
    if disposition:
        parameters["ResponseContentDisposition"] = disposition
    storage = _storage()
    if not public_endpoint:
        return storage.url(name, parameters=parameters, expire=seconds)
    _storage_, _client, bucket, key = _s3_target(name)
    return _public_client(storage, public_endpoint).generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key, **parameters}, ExpiresIn=seconds)


_public_clients: dict = {}
_public_clients_lock = threading.Lock()


def _public_client(storage, endpoint: str):
    # A boto3 client takes tens of milliseconds to build: one per endpoint and storage configuration.
    config = (endpoint, storage.region_name, storage.addressing_style, storage.signature_version)
    with _public_clients_lock:
        if config not in _public_clients:
            _public_clients[config] = storage._create_session().client(
                "s3", endpoint_url=endpoint, region_name=storage.region_name, config=storage.client_config)
        return _public_clients[config]
