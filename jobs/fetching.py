"""The image fetcher: gets the images of items given by URL, in the background, never in a request.

One fetcher runs per deployment, inside one django-q2 task under the lease `fetch:images` (like the pumps,
jobs/dispatch.py), for up to GENHUB_PUMP_SECONDS; it hands over to a fresh task while jobs still wait in
`fetching`. It keeps GENHUB_IMAGE_FETCH_CONCURRENCY URLs in flight on threads (the work is waiting on the
network), topping up as each finishes, so one slow server holds one thread and not the others. Each distinct
URL of the jobs it takes is fetched once; its bytes are checked exactly as an upload is
(`jobs.images.check_image`), then the jobs are queued with the image stored by its sha256, or failed with
`image_unavailable` and the reason. The batch goes on either way. Threads only fetch and check; every
database write is made by the loop's own thread.

Nothing is lost when a cluster dies mid-fetch: the jobs are still `fetching`, the lease lapses, and the
minute schedule or the next cluster's resume starts a fetcher that fetches them again.
"""

import logging
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from django.conf import settings

from genhub.db import DatabaseError, reconnect, with_reconnect
from genhub.leases import HeldLease
from jobs import services
from jobs.image_sources import ImageUnavailable, fetch_image_bytes, shown_url, source_name
from jobs.images import check_image
from jobs.models import Job
from jobs.uploaded import UploadedFile

log = logging.getLogger(__name__)
S = Job.Status
LEASE = "fetch:images"
# Rows read per free thread when topping up: jobs sharing a URL (seeds_per_image, a still in many rows)
# come along with it, so it is fetched once for all of them.
ROWS_PER_SLOT = 16
# After a database error or an image that could not be stored: not again at once.
BACKOFF_SECONDS = 1.0
PUMP_EVERY_SECONDS = 1.0


def fetch_enqueue(wait: float = 0.0) -> None:
    from jobs.tasks import fetch_images as fetch_task

    fetch_task.enqueue(wait) if wait else fetch_task.enqueue()


def fetch_restart(*, wait: float = 0.0) -> bool:
    """The safety net (minute schedule, cluster resume): a fetcher for jobs left waiting."""
    if Job.objects.filter(status=S.FETCHING).exists():
        fetch_enqueue(wait)
        return True
    return False


def images_fetch(*, wait: float = 0.0) -> str:
    """Fetches under the lease until no job waits (or GENHUB_PUMP_SECONDS), then lets go or hands over."""
    lease = HeldLease.acquire(LEASE, wait=wait)
    if lease is None:
        return "skipped: another fetcher holds the lease (it will look again before it lets go)"
    deadline = time.monotonic() + settings.GENHUB_PUMP_SECONDS
    fetched = 0
    released = clean = False
    try:
        while True:
            fetched += fetch_waiting(stop=lambda: lease.lost.is_set() or time.monotonic() >= deadline)
            if lease.lost.is_set() or time.monotonic() >= deadline:
                break
            if lease.release():
                released = True
                break
            # A wake-up arrived while fetching (new items by URL): look again.
        clean = True
    finally:
        if not released:
            pending = lease.hand_over()
            if clean and (pending or with_reconnect(_waiting)):
                with_reconnect(fetch_enqueue, what="fetcher hand-over")
    return f"{fetched} image(s)"


def _waiting() -> bool:
    return Job.objects.filter(status=S.FETCHING).exists()


def fetch_waiting(*, stop=lambda: False) -> int:
    """Fetches until no job waits in `fetching` or `stop()` → the distinct URLs settled.

    Once `stop()` is true no new URL is started; those in flight are finished and recorded.
    """
    threads = max(1, settings.GENHUB_IMAGE_FETCH_CONCURRENCY)
    in_flight: dict = {}  # future → (url, job ids)
    settled = 0
    pumps: set[str] = set()  # providers with newly queued jobs, whose pump is not told yet
    told_at = 0.0
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fetch") as pool:
        while True:
            if not stop() and len(in_flight) < threads:
                for url, job_ids in _take(threads - len(in_flight), in_flight.values()).items():
                    in_flight[pool.submit(_fetch_checked, url)] = (url, job_ids)
            # A pump, once running, takes every queued job; telling it once a second is enough, where once
            # per image would put thousands of pump tasks on the queue for a big batch.
            if pumps and (not in_flight or time.monotonic() - told_at >= PUMP_EVERY_SECONDS):
                with_reconnect(lambda: [services.pump_enqueue(provider) for provider in sorted(pumps)],
                               what="pump after fetching")
                pumps.clear()
                told_at = time.monotonic()
            if not in_flight:
                return settled
            done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            trouble = False
            for future in done:
                url, job_ids = in_flight.pop(future)
                image, reason = future.result()
                ok = _settle(url, job_ids, image, reason, pumps)
                settled += ok
                trouble |= not ok
            if trouble:
                time.sleep(BACKOFF_SECONDS)


def _take(slots: int, busy) -> dict[str, list[int]]:
    """Up to `slots` URLs of the oldest waiting jobs, none already in flight → {url: job ids}."""
    busy_urls = {url for url, _ in busy}
    busy_ids = [job_id for _, ids in busy for job_id in ids]
    try:
        rows = list(Job.objects.filter(status=S.FETCHING).exclude(pk__in=busy_ids)
                    .order_by("batch_id", "position", "id").values_list("pk", "image_url")[: slots * ROWS_PER_SLOT])
    except DatabaseError:
        log.exception("could not read the jobs waiting for their image; reconnecting")
        reconnect()
        time.sleep(BACKOFF_SECONDS)
        return {}
    taken: dict[str, list[int]] = {}
    for job_id, url in rows:
        if url in busy_urls:
            continue  # its fetch is under way; the job is settled by the next one
        if url in taken or len(taken) < slots:
            taken.setdefault(url, []).append(job_id)
    return taken


def _fetch_checked(url: str):
    """In a thread: (InputImage, None) or (None, reason). No database here."""
    try:
        data = fetch_image_bytes(url)
        image, reason = check_image(UploadedFile(source_name(url), data))
    except ImageUnavailable as exc:
        return None, exc.message
    except Exception:  # a bug must cost one item, not the fetcher
        log.exception("fetching %s failed unexpectedly", shown_url(url))
        return None, "genhub could not fetch it (an internal error, logged)"
    return image, (f"{shown_url(url)}: {reason}" if reason else None)


def _settle(url: str, job_ids: list[int], image, reason: str | None, pumps: set) -> bool:
    """Records one URL's outcome for its jobs; the providers of jobs it queued go into `pumps`.
    False: it could not be recorded, and they wait on."""
    try:
        if image is not None:
            moved = services.jobs_image_fetched(job_ids=job_ids, image=image)
            pumps.update(moved)
            log.info("fetched %s for %d job(s)", shown_url(url), sum(moved.values()))
        else:
            failed = services.jobs_image_unavailable(job_ids=job_ids, reason=reason)
            log.info("image %s unavailable for %d job(s): %s", shown_url(url), failed, reason)
        return True
    except OSError:
        # The image could not be stored (a full disk): the jobs stay `fetching` and are tried again.
        log.exception("could not store the image from %s; it is fetched again later", shown_url(url))
        return False
    except DatabaseError:
        log.exception("could not record the image from %s; it is fetched again later", shown_url(url))
        reconnect()
        return False
