"""A batch's finished videos as one ZIP, with a CSV manifest of every job.

The archive is produced as a stream: videos are copied from storage chunk by chunk into a ZIP
written without seeking, so a batch of a thousand clips never sits in memory at once. The same jobs
in the same states always give the same bytes (fixed member times), and the stream is kept in storage
(local disk or S3) under a name derived from that state, so a download can be resumed with a byte range and the ZIP
is built once per state of the batch, not once per request.
"""

import hashlib
import io
import zipfile
from collections.abc import Iterable, Iterator

from django.core.files.storage import default_storage
from django.utils.text import slugify

from genhub import spreadsheet, storage
from jobs.models import BatchRun, Job

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("input_file", "prompt", "negative_prompt", "seed", "status", "output_file", "cost_usd", "error")
CHUNK_BYTES = 1024 * 1024


def export_filename(batch: BatchRun) -> str:
    return f"{slugify(batch.name) or 'batch'}-{str(batch.uuid)[:8]}.zip"


def video_member_name(job: Job) -> str:
    """Unique in the archive even when one image was used many times (position), and says what it is."""
    stem = job.input_name.rsplit(".", 1)[0]
    return f"videos/{job.position + 1:04d}-{slugify(stem) or 'clip'}-seed{job.seed}.mp4"


def manifest_csv(jobs: Iterable[Job]) -> str:
    """One row per job, finished or not, so the manifest also says what is missing and why.
    Prompts and names are the users' words: cells that would start a formula are written as text."""
    out = io.StringIO()
    writer = spreadsheet.writer(out)
    writer.writerow(MANIFEST_COLUMNS)
    for job in jobs:
        writer.writerow([
            job.input_name, job.prompt, job.negative_prompt, job.seed, job.status,
            video_member_name(job) if job.output_video else "",
            "" if job.cost_usd is None else str(job.cost_usd),
            job.error_message,
        ])
    return out.getvalue()


class _Sink:
    """A write-only file for ZipFile that hands out what was written since the last drain."""

    def __init__(self):
        self._chunks: list[bytes] = []

    def write(self, data) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        data, self._chunks = b"".join(self._chunks), []
        return data


ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a ZIP can hold: the same for every build


def _member(name: str, compress_type: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.compress_type = compress_type
    info.external_attr = 0o644 << 16
    return info


def batch_zip_stream(jobs: list[Job]) -> Iterator[bytes]:
    """Yields the ZIP: the manifest first, then each stored video (MP4s are stored, not recompressed)."""
    sink = _Sink()
    # ZipFile sees no seek/tell on the sink and writes data descriptors instead of seeking back.
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(_member(MANIFEST_NAME, zipfile.ZIP_DEFLATED), manifest_csv(jobs))
        yield sink.drain()
        for job in jobs:
            if not job.output_video:
                continue
            # Chunked from storage (an S3 object is read from its response body, not downloaded whole).
            with archive.open(_member(video_member_name(job), zipfile.ZIP_STORED), "w") as target:
                for chunk in storage.read_chunks(job.output_video.name, CHUNK_BYTES):
                    target.write(chunk)
                    yield sink.drain()
    yield sink.drain()


def _export_key(jobs: list[Job]) -> str:
    """Changes whenever anything the archive holds would: a job's row in the manifest or its video."""
    digest = hashlib.sha256(manifest_csv(jobs).encode())
    for job in jobs:
        digest.update(f"\0{job.output_video.name if job.output_video else ''}".encode())
    return digest.hexdigest()[:24]


def export_name(batch: BatchRun, jobs: list[Job]) -> str:
    """Where the batch's ZIP, as its jobs stand now, is kept (whether or not it has been built yet)."""
    return f"exports/{batch.uuid}/{_export_key(jobs)}.zip"


def export_is_kept(batch: BatchRun, jobs: list[Job]) -> bool:
    return default_storage.exists(export_name(batch, jobs))


def batch_zip_kept_stream(batch: BatchRun, jobs: list[Job]) -> Iterator[bytes]:
    """Yields the ZIP (as `batch_zip_stream`) and keeps a copy: the first download starts at once,
    and a later one — a resume with a byte range — is served from the copy.

    The copy appears only when complete (a renamed temporary file on disk, a completed multipart upload
    in S3), so a concurrent request never serves half a file, and an abandoned download leaves nothing
    behind; an older export of the batch is removed once the new one is in place.
    """
    name = export_name(batch, jobs)
    with storage.atomic_writer(name) as out:
        for chunk in batch_zip_stream(jobs):
            out.write(chunk)
            yield chunk
    directory, current = name.rsplit("/", 1)
    for old in default_storage.listdir(directory)[1]:
        if old.endswith(".zip") and old != current:
            default_storage.delete(f"{directory}/{old}")


def batch_zip_stored(batch: BatchRun, jobs: list[Job]) -> str:
    """The storage name of the batch's ZIP as its jobs stand now, built first if it is not kept yet."""
    if not export_is_kept(batch, jobs):
        for _chunk in batch_zip_kept_stream(batch, jobs):
            pass
    return export_name(batch, jobs)
