from genhub.cli import OperatorCommand
from gpu_instances.orchestrator import VastAIOrchestrator


class Command(OperatorCommand):
    help = "Run one reconcile step of the GPU instance, printing what it did."

    def handle(self, *args, **options):
        steps = []

        def say(line):
            steps.append(line)
            self.stdout.write(f"step: {line}")

        outcome = VastAIOrchestrator().reconcile(max_seconds=0, say=say)
        if not steps:  # nothing ran (not configured, or another reconcile holds the lease): say why
            self.stdout.write(outcome)
