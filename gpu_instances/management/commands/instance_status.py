from django.core.management.base import BaseCommand

from gpu_instances import selectors
from gpu_instances.services import instance_summary


class Command(BaseCommand):
    help = "Show the active GPU instance (state, address, age, cost so far, last health) and recent history."

    def handle(self, *args, **options):
        active = selectors.instance_active()
        if active is None:
            self.stdout.write("no active instance")
        else:
            for key, value in instance_summary(active).items():
                self.stdout.write(f"{key:>16}: {value}")
        block = selectors.vast_search_block()
        if block:
            self.stdout.write(f"\noffer search paused until {block[0]:%Y-%m-%d %H:%M} UTC: {block[1]}")
        self.stdout.write("\nrecent instances:")
        for instance in selectors.instance_history():
            summary = instance_summary(instance)
            self.stdout.write(f"  vast #{summary['vast_id']} {summary['state']:<12} {summary['gpu']:<12} "
                              f"${summary['cost_so_far_usd']} {summary['end_reason']}")
