"""Paid results genhub could not store (a full disk, a storage error): kept, stored later, never regenerated.

When storing a checked clip fails, its bytes are spooled to the pending area
(GENHUB_PENDING_RESULTS_DIR, best put on another disk) and the job goes to `storing`, with what it
cost already added and, when the provider can serve the clip again (fal's CDN URL), that source
too. Each pump pass tries the due ones again: from the spool, or fetched again from the source when the
spool could not be written. The first retry comes soon and the wait doubles up to GENHUB_STORE_RETRY_SECONDS:
while a kept result waits, no new request goes to fal (nor to the GPU once the pending area is full), so a
disk that was full for a moment must not hold dispatch for a whole retry interval after it has room again.
On a local disk, a result is also due at once when the disk has gained room for it since it last failed
(the free space is noted with each failure): a freed disk ends the hold within a pump pass, not at the next
step of the backoff. A result is only lost when both are gone; that is a permanent, billed failure, never a
silent new generation.

The spool is a local directory of the host whose worker kept the clip (its name is recorded with it):
with several cluster hosts, only that host reads it back (unless the area is a shared filesystem);
another host stores the clip only when it can fetch it again from its source.
"""

import logging
import os
import socket
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from jobs import alerts, artifacts, services
from jobs.models import Job
from jobs.storage_health import MB, ROOM_PER_CLIP_BYTES, free_bytes, media_free_bytes
from providers.base import Finished
from providers.errors import PermanentError, ProviderError
from providers.registry import get_provider

log = logging.getLogger(__name__)
S = Job.Status


def pending_dir() -> Path:
    if settings.GENHUB_PENDING_RESULTS_DIR:
        return Path(settings.GENHUB_PENDING_RESULTS_DIR)
    media = Path(settings.MEDIA_ROOT)
    return media.parent / f"{media.name}-pending"


def room_to_keep(*, clips: int) -> bool:
    """Whether the pending area could take `clips` more kept clips with GENHUB_STORAGE_MIN_FREE_MB to spare."""
    free = free_bytes(pending_dir())
    return free is not None and free >= settings.GENHUB_STORAGE_MIN_FREE_MB * MB + clips * ROOM_PER_CLIP_BYTES


def keep(*, job: Job, finished: Finished, cost: Decimal | None, error: Exception) -> bool:
    """Keeps a paid clip that could not be stored. False: nothing could be kept, or the job moved on."""
    spool = _spool(job, finished.video)
    if not spool and not finished.source:
        return False
    message = f"{type(error).__name__}: {error}"[:300]
    pending = {"spool": spool, "host": socket.gethostname() if spool else "", "source": finished.source,
               "meta": _json_safe(finished.meta), "cost": str(cost or 0), "error": message,
               "retry_at": _retry_at(tries=0).isoformat(), "tries": 0, "bytes": len(finished.video),
               "free_bytes": media_free_bytes()}
    kept = services.job_keep_result(
        job_id=job.pk, claim=job.claims, pending=pending, cost=cost,
        message=f"the clip was made and paid for, but genhub could not store it ({message}); it is kept and "
                "will be stored when storage works again")
    if not kept:
        _unspool(spool)
        return False
    log.warning("job %s: result kept in %s (storing failed: %s)", job.uuid, spool or "the provider", message)
    alerts.storage_failing_raise()
    return True


def store_due(*, provider_name: str) -> int:
    """Stores the kept results that are due; returns how many were stored."""
    _settle_abandoned()
    now = timezone.now()
    free = media_free_bytes()
    stored = 0
    for job in Job.objects.filter(provider=provider_name, status=S.STORING).order_by("pk"):
        retry_at = parse_datetime(job.pending_result.get("retry_at") or "")
        if retry_at and retry_at > now and not _room_made_for(job.pending_result, free):
            continue
        stored += _store_one(job)
    if not Job.objects.filter(status=S.STORING).exists():
        alerts.storage_failing_resolve()
    return stored


def _store_one(job: Job) -> int:
    pending = job.pending_result
    try:
        video = _kept_bytes(job)
    except SpooledElsewhere:
        return 0  # only the host holding the spool can store it; "not here" must not read as "lost"
    except ProviderError as exc:
        if exc.permanent:
            log.error("job %s: its paid result is gone: %s", job.uuid, exc.message)
            services.job_kept_result_lost(job_id=job.pk, message=f"the paid clip could not be stored and is no "
                                                                   f"longer available: {exc.message}")
            return 0
        return _later(job, exc)
    try:
        facts = artifacts.inspect_video(video)
        video_name, poster_name = artifacts.store_output(job_uuid=str(job.uuid), video=video, facts=facts)
    except Exception as exc:  # still failing: keep it, try again later
        return _later(job, exc)
    meta = pending.get("meta") or {}
    if services.job_store_kept(job_id=job.pk, output_video=video_name, poster=poster_name,
                               video_frames=facts.frames, video_fps=facts.fps,
                               video_duration=round(facts.duration, 3), video_codec=facts.codec,
                               generation_seconds=meta.get("generation_seconds"),
                               instance_id=meta.get("instance_id")):
        _unspool(pending.get("spool"))
        log.info("job %s: kept result stored", job.uuid)
        return 1
    artifacts.discard(video_name, poster_name)  # cancelled meanwhile; _settle_abandoned books it
    return 0


def _room_made_for(pending: dict, free: int | None) -> bool:
    """Whether the disk has gained room for this clip since it last failed to store (then it is worth
    trying at once). Not for a failure with room to spare (a permission error): it keeps its backoff."""
    before = pending.get("free_bytes")
    return isinstance(before, int) and free is not None and free >= before + int(pending.get("bytes") or 0)


class SpooledElsewhere(Exception):
    """The clip was spooled on another host, and this one cannot fetch it from its source."""


def _spooled_elsewhere(pending: dict) -> bool:
    host = pending.get("host")
    return bool(pending.get("spool") and host and host != socket.gethostname())


def _kept_bytes(job: Job) -> bytes:
    spool = job.pending_result.get("spool")
    source = job.pending_result.get("source")
    if spool:
        try:
            return Path(spool).read_bytes()  # here, or on a pending area all hosts share
        except OSError as exc:
            if _spooled_elsewhere(job.pending_result) and not source:
                raise SpooledElsewhere(job.pending_result["host"]) from exc
            log.warning("job %s: spooled result unreadable (%s); fetching it again", job.uuid, exc)
    if not source:
        raise PermanentError("it was neither spooled nor can the provider serve it again", code="result_lost")
    return get_provider(job.provider).fetch_output(source)


def _later(job: Job, exc: Exception) -> int:
    log.warning("job %s: kept result still cannot be stored: %s", job.uuid, exc)
    tries = int(job.pending_result.get("tries") or 0) + 1
    services.job_kept_result_retry_later(job_id=job.pk, pending={
        **job.pending_result, "error": f"{type(exc).__name__}: {exc}"[:300], "tries": tries,
        "retry_at": _retry_at(tries=tries).isoformat(), "free_bytes": media_free_bytes()})
    return 0


def _settle_abandoned() -> None:
    """Kept results of jobs cancelled while storing: their cost stays, as waste; the spool goes."""
    for job in Job.objects.filter(status=S.CANCELLED).exclude(pending_result={}):
        if services.job_kept_result_abandoned(job_id=job.pk, cost=Decimal(job.pending_result.get("cost") or 0)):
            _unspool(job.pending_result.get("spool"))


def _spool(job: Job, video: bytes) -> str:
    """Writes the clip to the pending area under a temporary name, then renames it: all or nothing."""
    directory = pending_dir()
    final = directory / f"{job.uuid}-{job.claims}.mp4"
    partial = directory / f".{final.name}.{uuid.uuid4().hex[:8]}.part"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as handle:
            handle.write(video)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, final)
    except OSError as exc:
        log.error("job %s: could not spool its paid result either: %s", job.uuid, exc)
        partial.unlink(missing_ok=True)
        return ""
    return str(final)


def _unspool(spool: str | None) -> None:
    if spool:
        Path(spool).unlink(missing_ok=True)


RETRY_STEPS = 3  # retries before the wait reaches GENHUB_STORE_RETRY_SECONDS: 1/8, 1/4, 1/2 of it, then all


def _retry_at(*, tries: int):
    """When a result that failed to store `tries` times after it was kept is tried again."""
    wait = settings.GENHUB_STORE_RETRY_SECONDS / 2 ** max(0, RETRY_STEPS - tries)
    return timezone.now() + timedelta(seconds=wait)


def _json_safe(meta: dict) -> dict:
    return {key: str(value) if isinstance(value, Decimal) else value for key, value in meta.items()}
