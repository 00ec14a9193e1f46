from genhub.cli import OperatorCommand
from genhub.formatting import usd
from gpu_instances import selectors
from gpu_instances.services import instance_cost_so_far, instance_headline, instance_report


class Command(OperatorCommand):
    help = "Show the active GPU instance (state, address, age, cost so far, last health) and recent history."

    def handle(self, *args, **options):
        active = selectors.instance_active()
        if active is None:
            self.stdout.write("no active instance")
        else:
            self.stdout.write(f"active: {instance_headline(active)}")
            for label, value in instance_report(active):
                self.stdout.write(f"  {label:<14} {value}")
        block = selectors.vast_search_block()
        if block:
            self.stdout.write(f"\noffer search paused until {block[0]:%Y-%m-%d %H:%M} UTC: {block[1]}")
        history = list(selectors.instance_history())
        if not history:
            return
        self.stdout.write("\nrecent instances:")
        for instance in history:
            name = f"vast #{instance.vast_id}" if instance.vast_id else "not rented"
            self.stdout.write(f"  {name:<14} {instance.state:<11} {instance.gpu_name or '—':<12} "
                              f"{usd(instance_cost_so_far(instance)):>9}  {instance.end_reason}".rstrip())
