"""Whether genhub can store results now. While it cannot, no new request goes to fal, and the rented GPU
(billed whether it works or not) goes on only while its clips can wait in the pending area.

The signal is durable and shared by every process: jobs in `storing` (paid results that could not be
stored and wait in the pending area, each with its last storage error), plus, on a local disk, the
free space left in MEDIA_ROOT. A bucket has no free space to measure: with object storage the last
storage error is the whole signal. It clears by itself once the kept results are stored (and the disk
has room again).
"""

import shutil
from pathlib import Path

from django.conf import settings

from genhub import storage
from jobs.models import Job

MB = 1024 * 1024
# Room a clip is assumed to need before it is written: far above a real 5 s clip (a few MB), so new work
# is bought ahead of storing only while the disk is nowhere near full.
ROOM_PER_CLIP_BYTES = 50 * 1024 * 1024


def free_bytes(path) -> int | None:
    """Free space on the filesystem holding `path` (or its nearest existing parent); None if unknown."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def media_free_bytes() -> int | None:
    """Free space where results are stored: MEDIA_ROOT's disk; None for a bucket, which has no such figure."""
    return None if storage.is_object_storage() else free_bytes(settings.MEDIA_ROOT)


def storage_problem() -> str | None:
    """Why new paid work must wait for storage, or None when storing works."""
    storing = Job.objects.filter(status=Job.Status.STORING)
    count = storing.count()
    if count:
        last = storing.order_by("-heartbeat_at").values_list("pending_result", flat=True).first() or {}
        return (f"{count} paid clip(s) could not be stored yet ({last.get('error') or 'storage error'}); they are "
                "kept and stored as soon as storage works again; until then no new request goes to fal, and the GPU "
                "goes on only while the pending area has room")
    needed = settings.GENHUB_STORAGE_MIN_FREE_MB * MB
    free = media_free_bytes()
    if needed and free is not None and free < needed:
        return (f"only {free / MB:.0f} MB free where videos are stored (MEDIA_ROOT; "
                f"GENHUB_STORAGE_MIN_FREE_MB is {settings.GENHUB_STORAGE_MIN_FREE_MB}); no new request goes to fal "
                "until there is room, and the GPU goes on only while the pending area has room")
    return None
