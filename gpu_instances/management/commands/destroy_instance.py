from django.core.management.base import CommandError

from genhub.cli import OperatorCommand
from gpu_instances import selectors
from gpu_instances.models import GpuInstance
from gpu_instances.orchestrator import VastAIOrchestrator
from gpu_instances.services import instance_headline


class Command(OperatorCommand):
    help = "Destroy the active GPU instance (its running jobs go back to the queue). Needs --yes."

    def add_arguments(self, parser):
        parser.add_argument("--yes", action="store_true", help="confirm: this stops the paid instance")
        parser.add_argument("--reason", default="operator: destroy_instance")

    def handle(self, *args, yes, reason, **options):
        instance = selectors.instance_active()
        if instance is None:
            raise CommandError("there is no active instance")
        if not yes:
            raise CommandError(f"this destroys {instance_headline(instance)}; run again with --yes to confirm")
        VastAIOrchestrator().destroy(instance, reason if reason.startswith("operator") else f"operator: {reason}")
        instance.refresh_from_db()
        if instance.state != GpuInstance.State.DESTROYED:
            raise CommandError(f"destroy requested but not confirmed yet ({instance_headline(instance)}); "
                               "reconcile retries it")
        self.stdout.write(self.style.SUCCESS(f"destroyed {instance_headline(instance)}; its unfinished jobs went "
                                             "back to the queue"))
