"""The image fetcher: gets the images of items given by URL, in the background, never in a request.

One fetcher runs per deployment, inside one django-q2 task under the lease `fetch:images` (like the pumps,
jobs/dispatch.py): it makes passes for up to GENHUB_PUMP_SECONDS and hands over to a fresh task while
jobs wait in `fetching`. A pass takes the oldest waiting jobs, fetches each distinct URL once with at most
GENHUB_IMAGE_FETCH_CONCURRENCY at a time (threads: the work is waiting on the network), checks the bytes
exactly as an upload is checked (`jobs.images.check_image`) and then either queues the jobs with the image
stored by its sha256, or fails them with `image_unavailable` and the reason; the batch goes on either way.

Nothing is lost when a cluster dies mid-fetch: the jobs are still `fetching`, the lease lapses, and the
minute schedule or the next cluster's resume starts a fetcher that fetches them again.
"""

import logging
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

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
# URLs one pass takes, per thread: enough to keep every thread busy, few enough that a pass ends soon.
URLS_PER_THREAD = 4
IDLE_SECONDS = 0.5


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
    """Runs fetch passes under the lease until no job waits (or GENHUB_PUMP_SECONDS), then lets go or hands over."""
    lease = HeldLease.acquire(LEASE, wait=wait)
    if lease is None:
        return "skipped: another fetcher holds the lease (it will make another pass)"
    deadline = time.monotonic() + settings.GENHUB_PUMP_SECONDS
    fetched = passes = 0
    released = clean = False
    try:
        while not lease.lost.is_set():
            passes += 1
            done = _guarded_pass()
            fetched += done
            if time.monotonic() >= deadline:
                break
            if not done:
                if lease.release():
                    released = True
                    break
                continue  # a wake-up arrived meanwhile (new items): look again
            if done < 0:
                time.sleep(IDLE_SECONDS)  # images could not be stored: not again at once
        clean = True
    finally:
        if not released:
            pending = lease.hand_over()
            if clean and (pending or with_reconnect(_waiting)):
                with_reconnect(fetch_enqueue, what="fetcher hand-over")
    return f"{fetched} image(s) in {passes} pass(es)"


def _waiting() -> bool:
    return Job.objects.filter(status=S.FETCHING).exists()


def _guarded_pass() -> int:
    try:
        return fetch_pass()
    except DatabaseError:
        log.exception("image fetch pass failed on the database; reconnecting")
        reconnect()
        return 0


def fetch_pass() -> int:
    """Fetches the images of the oldest waiting jobs → how many distinct URLs were settled (0: none
    waited; negative: some could not be stored and wait for the next pass)."""
    threads = max(1, settings.GENHUB_IMAGE_FETCH_CONCURRENCY)
    by_url: dict[str, list[int]] = {}
    waiting = Job.objects.filter(status=S.FETCHING).order_by("batch_id", "position", "id").values_list(
        "pk", "image_url")
    # Many jobs may share a URL (seeds_per_image, the same still in several rows): fetched once.
    for job_id, url in waiting[: threads * URLS_PER_THREAD * 4].iterator():
        if url in by_url or len(by_url) < threads * URLS_PER_THREAD:
            by_url.setdefault(url, []).append(job_id)
    if not by_url:
        return 0
    settled = 0
    with ThreadPoolExecutor(max_workers=min(threads, len(by_url)), thread_name_prefix="fetch") as pool:
        futures = {pool.submit(_fetch_checked, url): url for url in by_url}
        for future in as_completed(futures):
            url = futures[future]
            image, reason = future.result()
            settled += _settle(url, by_url[url], image, reason)
    return settled if settled == len(by_url) else -1


def _fetch_checked(url: str):
    """In a thread: (InputImage, None) or (None, reason). No database here."""
    try:
        data = fetch_image_bytes(url)
    except ImageUnavailable as exc:
        return None, exc.message
    except Exception:  # a bug must cost one item, not the fetcher
        log.exception("fetching %s failed unexpectedly", shown_url(url))
        return None, "genhub could not fetch it (an internal error, logged)"
    image, reason = check_image(UploadedFile(source_name(url), data))
    return image, (f"{shown_url(url)}: {reason}" if reason else None)


def _settle(url: str, job_ids: list[int], image, reason: str | None) -> bool:
    try:
        if image is not None:
            moved = services.jobs_image_fetched(job_ids=job_ids, image=image)
            log.info("fetched %s for %d job(s)", shown_url(url), moved)
        else:
            failed = services.jobs_image_unavailable(job_ids=job_ids, reason=reason)
            log.info("image %s unavailable for %d job(s): %s", shown_url(url), failed, reason)
        return True
    except OSError:
        # The image could not be stored (a full disk): the jobs stay `fetching` and are tried again.
        log.exception("could not store the image from %s; it is fetched again later", shown_url(url))
        return False
