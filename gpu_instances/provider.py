"""The `vastai` provider: jobs run one by one on the persistent SwarmUI instance.

It is a blocking provider: a worker streams one generation over SwarmUI's WebSocket, relaying
progress. The in-flight limit (default 2: one generating, one queued inside SwarmUI) keeps the GPU
busy between jobs while little work is at risk when the instance dies.
"""

from decimal import Decimal

from django.conf import settings

from gpu_instances.generation import earlier_generation, timed_generation
from gpu_instances.models import GpuInstance
from gpu_instances.orchestrator import VastAIOrchestrator, swarmui_for
from gpu_instances.qualification import admits_jobs
from providers.base import Finished, GenerationRequest, Provider
from providers.errors import TransientError
from providers.swarmui import build_video_params

# Failures that say the machine, not the job, is in trouble.
UNREACHABLE_CODES = {"connection_error", "timeout", "http_502", "http_503", "http_504"}


class VastAIProvider(Provider):
    name = "vastai"
    polled = False

    def capacity(self) -> int | None:
        orchestrator = VastAIOrchestrator()
        ready = orchestrator.ready()
        if ready and admits_jobs(ready):
            return settings.VAST_MAX_IN_FLIGHT
        if ready:
            return None  # it is running its self-test; reconcile is already following it
        if not orchestrator.demand():
            return None
        _, created = orchestrator.get_or_create_instance()
        if created:
            from gpu_instances.tasks import reconcile as reconcile_task

            reconcile_task.enqueue()
        return None

    def placement(self) -> dict:
        instance = VastAIOrchestrator().ready()
        if instance is None:
            raise TransientError("no GPU instance is ready", code="instance_not_ready")
        if not admits_jobs(instance):
            raise TransientError(f"instance vast #{instance.vast_id} has not passed its self-test yet",
                                 code="instance_not_ready")
        return {"instance_id": instance.pk}

    def submit(self, request: GenerationRequest, *, on_progress=None, placement: dict | None = None,
               cancel=None, on_remote=None) -> Finished:
        instance = GpuInstance.objects.get(pk=(placement or self.placement())["instance_id"])
        if instance.state != GpuInstance.State.READY:
            # It left `ready` between placement and now (a failed probe, a stall on another job): nothing
            # was sent, so the job goes back without using an attempt.
            raise TransientError(f"instance vast #{instance.vast_id} is {instance.state}", code="instance_not_ready",
                                 nothing_ran=True)
        earlier = earlier_generation(instance, request.earlier_work)
        if earlier is not None:
            # Its GPU time was spent by the lost attempt: it is this clip's cost, counted once.
            return self._finished(instance, *earlier)
        params = request.params
        swarm_params = build_video_params(
            image=request.image, image_content_type=request.image_content_type, prompt=request.prompt,
            negative_prompt=request.negative_prompt, seed=request.seed, num_frames=params["num_frames"],
            fps=params["fps"], width=params["width"], height=params["height"], steps=params["steps"],
            cfg=params["cfg"], video_model=settings.SWARMUI_VIDEO_MODEL, swap_model=settings.SWARMUI_SWAP_MODEL or None,
            work_tag=request.work_tag,
        )
        started = []

        def relay(fraction: float) -> None:
            started.append(True)  # SwarmUI reports as soon as the GPU takes the job
            if on_progress:
                on_progress(fraction)

        try:
            # `cancel` (set when the job is cancelled or taken from this worker) interrupts it in SwarmUI.
            video, seconds = timed_generation(instance, swarm_params, on_progress=relay, cancel=cancel,
                                              on_session=on_remote and (lambda session: on_remote({
                                                  "instance_id": instance.pk, "session_id": session,
                                                  "work": request.work_tag})))
        except TransientError as exc:
            if exc.code in UNREACHABLE_CODES:
                VastAIOrchestrator().report_trouble(instance, exc.message)
                # Waiting for the GPU (or not even sent) when the machine stopped answering: not this job's doing.
                exc.nothing_ran = not started
            raise
        return self._finished(instance, video, seconds)

    @staticmethod
    def _finished(instance: GpuInstance, video, seconds: float | None) -> Finished:
        return Finished(video=video.video, meta={
            "instance_id": instance.pk, "generation_seconds": None if seconds is None else round(seconds, 3),
            "dph_usd": instance.dph_usd if instance.dph_usd is not None else Decimal("0"),
            "swarmui_path": video.path,
        })

    def cancel(self, ref: dict) -> None:
        """Interrupts the SwarmUI session a generation ran on, whose worker is gone (or that was cancelled):
        the GPU would otherwise finish a clip nobody collects, ahead of the one that replaces it."""
        instance = GpuInstance.objects.filter(pk=ref.get("instance_id"), state__in=(
            GpuInstance.State.READY, GpuInstance.State.UNHEALTHY)).first()
        session = ref.get("session_id")
        if instance is not None and isinstance(session, str) and session:
            swarmui_for(instance).interrupt_session(session)

    def poll_interval(self) -> float:
        return settings.VAST_DISPATCH_INTERVAL
