import time

from django.conf import settings
from django.core.management.base import CommandError

from genhub.cli import Clock, OperatorCommand
from gpu_instances.models import GpuInstance
from gpu_instances.orchestrator import VastAIOrchestrator
from gpu_instances.services import instance_headline


class Command(OperatorCommand):
    help = "Get or create the persistent GPU instance; with --wait, follow it until ready (or fail with the reason)."

    def add_arguments(self, parser):
        parser.add_argument("--wait", action="store_true", help="block until the instance is ready")
        parser.add_argument("--timeout", type=float, default=None,
                            help="seconds to wait (default: the boot deadline plus a minute)")

    def handle(self, *args, wait, timeout, **options):
        if not settings.VAST_API_KEY:
            raise CommandError("VAST_API_KEY is not set")
        orchestrator = VastAIOrchestrator()
        instance, created = orchestrator.get_or_create_instance(requested_by="operator")
        if created:
            self.stdout.write("requested a new instance; renting one…")
        else:
            self.stdout.write(f"found the instance: {instance_headline(instance)}")
        if not wait:
            return
        timeout = timeout or settings.VAST_BOOT_DEADLINE_SECONDS + 60
        clock, deadline = Clock(), time.monotonic() + timeout
        last_line, rented = None, instance.vast_id is not None
        while time.monotonic() < deadline:
            # Steps run under the reconcile lease: if the cluster is reconciling, we just watch.
            outcome = orchestrator.reconcile(max_seconds=0)
            current = GpuInstance.objects.get(pk=instance.pk)
            if current.state == GpuInstance.State.READY:
                self.stdout.write(self.style.SUCCESS(f"ready: {current.gpu_name} at {current.base_url}"))
                return
            if not rented and current.vast_id is not None:
                rented = True  # now there is an id, a GPU and a price to name
                line = f"rented {instance_headline(current)}"
            else:
                line = f"{current.state}: {outcome}"
            if line != last_line:  # one line per change, not one per poll
                self.stdout.write(f"{clock.stamp()} {line}")
                last_line = line
            if not current.is_active:
                raise CommandError(f"the instance did not become ready: {current.end_reason or current.state}")
            time.sleep(settings.GENHUB_RECONCILE_INTERVAL)
        current = GpuInstance.objects.get(pk=instance.pk)
        raise CommandError(f"not ready after {timeout:.0f}s; last state: {instance_headline(current)}")
