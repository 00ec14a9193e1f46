from django.core.management.base import BaseCommand

from gpu_instances.orchestrator import VastAIOrchestrator


class Command(BaseCommand):
    help = "Run one reconcile step of the GPU instance, printing what it did."

    def handle(self, *args, **options):
        outcome = VastAIOrchestrator().reconcile(max_seconds=0, say=lambda line: self.stdout.write(f"step: {line}"))
        self.stdout.write(outcome)
