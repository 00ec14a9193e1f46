"""One timed generation on an instance: how jobs and the self-test both measure GPU seconds per clip."""

import time

from gpu_instances.models import GpuInstance
from gpu_instances.orchestrator import swarmui_for
from providers.swarmui import GeneratedVideo


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
