"""One timed generation on an instance: how jobs and the self-test both measure GPU seconds per clip; and
the clip an earlier attempt finished there, found again."""

import logging
import time

from gpu_instances.models import GpuInstance
from gpu_instances.orchestrator import swarmui_for
from providers.errors import ProviderError
from providers.swarmui import GeneratedVideo, reported_generation_seconds

log = logging.getLogger(__name__)


def timed_generation(instance: GpuInstance, swarm_params: dict, *, on_progress=None,
                     cancel=None, on_session=None) -> tuple[GeneratedVideo, float]:
    """Runs one generation on the instance; returns the video and its GPU seconds.

    The GPU is the clip's from its first generation step, not from when it joined SwarmUI's queue
    behind the previous one: that wait is neither billed to it nor part of its speed. Jobs and the
    self-test measure the same way, so their samples compare.
    """
    submitted = time.monotonic()
    gpu_started = None

    def relay(fraction: float) -> None:
        nonlocal gpu_started
        if gpu_started is None:
            gpu_started = time.monotonic()
        if on_progress:
            on_progress(fraction)

    video = swarmui_for(instance).generate_video(swarm_params, on_progress=relay, cancel=cancel,
                                                 on_session=on_session)
    return video, time.monotonic() - (gpu_started or submitted)


def earlier_generation(instance: GpuInstance, earlier_work: dict) -> tuple[GeneratedVideo, float | None] | None:
    """The video an earlier attempt, whose worker was lost, finished on this instance (found by the tag it
    was generated with) and the GPU seconds SwarmUI reported for it; None when there is none to take.

    A generation of that attempt still running is interrupted first, when its worker is certainly gone
    (the reference then names its session): its partial work is lost, but no progress of it would reach
    genhub, so the stall watchdog could not follow it. Looking is best effort: should SwarmUI not answer,
    the clip is generated again, as it would be without this. A clip made on another instance is gone
    with that instance's disk.
    """
    tag = earlier_work.get("work")
    if earlier_work.get("instance_id") != instance.pk or not isinstance(tag, str) or not tag:
        return None
    client = swarmui_for(instance)
    session = earlier_work.get("session_id")
    if isinstance(session, str) and session:
        # Nobody follows that generation any more: should it still run, it stops here, so that it cannot
        # finish just after the look below and leave a second clip.
        client.interrupt_session(session)
    try:
        found = client.find_output(tag)
        if found is None:
            return None
        path, extra = found
        video = GeneratedVideo(path=path, video=client.download(path))
    except ProviderError as exc:
        log.warning("vast #%s: could not collect the clip of lost attempt %s (%s); generating it again",
                    instance.vast_id, tag, exc.message)
        return None
    log.info("vast #%s: collected the clip lost attempt %s had finished (%s)", instance.vast_id, tag, path)
    return video, reported_generation_seconds(extra)
