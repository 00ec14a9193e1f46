from django.core.management.base import BaseCommand

from jobs.schedules import schedules_ensure


class Command(BaseCommand):
    help = "Create or update genhub's django-q2 schedules. Safe to run on every deploy."

    def handle(self, *args, **options):
        for name, action in schedules_ensure():
            self.stdout.write(f"{action} {name}")
