"""django-q2 entry points for the GPU instance: ids in, one service call, nothing else."""

from genhub.queue import task


@task
def reconcile(wait: float = 0.0) -> str:
    from gpu_instances.orchestrator import VastAIOrchestrator

    return VastAIOrchestrator().reconcile(wait=wait)
