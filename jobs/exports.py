"""A batch's finished videos as one ZIP, with a CSV manifest of every job.

The archive is produced as a stream: videos are copied from storage chunk by chunk into a ZIP
written without seeking, so a batch of a thousand clips never sits in memory at once.
"""

import io
import zipfile
from collections.abc import Iterable, Iterator

from django.utils.text import slugify

from genhub import spreadsheet
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


def batch_zip_stream(jobs: list[Job]) -> Iterator[bytes]:
    """Yields the ZIP: the manifest first, then each stored video (MP4s are stored, not recompressed)."""
    sink = _Sink()
    # ZipFile sees no seek/tell on the sink and writes data descriptors instead of seeking back.
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(MANIFEST_NAME, manifest_csv(jobs), compress_type=zipfile.ZIP_DEFLATED)
        yield sink.drain()
        for job in jobs:
            if not job.output_video:
                continue
            with job.output_video.open("rb") as source, archive.open(video_member_name(job), "w") as target:
                while chunk := source.read(CHUNK_BYTES):
                    target.write(chunk)
                    yield sink.drain()
    yield sink.drain()
