import json
import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from genhub.cli import Clock, OperatorCommand, ProgressBar
from genhub.formatting import usd
from jobs import selectors, services
from jobs.intake import BatchValidationError, UploadedFile, build_batch
from jobs.models import Job

# The order counts are listed in: what is left first, then what is done.
COUNT_ORDER = (Job.Status.RUNNING, Job.Status.FETCHING, Job.Status.QUEUED, Job.Status.WAITING_FOR_GPU,
               Job.Status.PAUSED, Job.Status.SUCCEEDED, Job.Status.FAILED, Job.Status.CANCELLED)
UNFINISHED_BATCH = ("fetching", "queued", "waiting_for_gpu", "running")


def words(status: str) -> str:
    return "waiting for a GPU" if status == Job.Status.WAITING_FOR_GPU else status.replace("_", " ")


def describe_counts(counts: dict) -> str:
    """`1 running, 2 queued, 1 succeeded` — only the states that have jobs."""
    return ", ".join(f"{counts[status]} {words(status)}" for status in COUNT_ORDER if counts.get(status))


class Command(OperatorCommand):
    help = "Submit a batch from image files, like POST /api/batches/."

    def add_arguments(self, parser):
        parser.add_argument("images", nargs="+", type=Path)
        parser.add_argument("--user", required=True, help="owner's username")
        parser.add_argument("--provider", required=True, choices=["fal", "vastai"])
        parser.add_argument("--prompt", default="")
        parser.add_argument("--name", default="")
        parser.add_argument("--preset")
        parser.add_argument("--params", default="{}", help="JSON object of generation parameters")
        parser.add_argument("--items", type=Path, help="CSV/TSV/JSON file pairing file names with prompts/seeds")
        parser.add_argument("--seeds-per-image", type=int, default=1)
        parser.add_argument("--deadline", help="vastai: finish by this ISO 8601 time with timezone, moving jobs "
                                                 "to fal as needed")
        parser.add_argument("--webhook-url", help="https URL that gets a signed POST when the batch finishes")
        parser.add_argument("--webhook-events", choices=["batch", "batch,job"])
        parser.add_argument("--wait", action="store_true", help="wait until every job has finished")
        parser.add_argument("--poll-seconds", type=float, default=2.0, help="with --wait: how often to look")

    def handle(self, *args, **options):
        try:
            owner = get_user_model().objects.get(username=options["user"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user named {options['user']!r}") from None
        try:
            params = json.loads(options["params"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--params is not valid JSON: {exc.msg}") from None
        missing = [str(p) for p in options["images"] if not p.is_file()]
        if missing:
            raise CommandError(f"no such file(s): {', '.join(missing)}")
        try:
            spec = build_batch(
                provider=options["provider"], name=options["name"], preset=options["preset"], params=params,
                prompt=options["prompt"], files=[UploadedFile(p.name, p.read_bytes()) for p in options["images"]],
                rows_text=options["items"].read_text() if options["items"] else "",
                seeds_per_image=options["seeds_per_image"], deadline=options["deadline"],
                webhook_url=options["webhook_url"], webhook_events=options["webhook_events"],
            )
        except BatchValidationError as exc:
            lines = [f"  {e['field']}{' [' + e['item'] + ']' if 'item' in e else ''}: {e['message']}"
                     for e in exc.errors]
            raise CommandError("the batch was rejected, nothing was created:\n" + "\n".join(lines)) from None
        batch = services.batch_create(owner=owner, spec=spec)
        count = len(spec.items)
        self.stdout.write(f"batch {batch.uuid}: {count} {'job' if count == 1 else 'jobs'} on {spec.provider}")
        if batch.webhook_secret:
            self.stdout.write(f"webhook signing secret (shown once): {batch.webhook_secret}")
        if not options["wait"]:
            return
        batch = self.follow(owner, batch, poll_seconds=options["poll_seconds"])
        if batch.n_failed:
            raise CommandError(f"{batch.n_failed} of {batch.n_total} jobs failed")

    def follow(self, owner, batch, *, poll_seconds: float):
        """One line each time the batch's state or counts change; a progress bar between them on a terminal."""
        clock, bar, last = Clock(), ProgressBar(self.stdout), None
        while True:
            batch = selectors.batch_get(user=owner, batch_uuid=batch.uuid)
            status = selectors.batch_status(batch)
            # The maintained counts and the running jobs' progress: a 10,000-job batch is not read whole.
            progress = selectors.batch_progress(batch, selectors.batch_running_progress(batch))
            line = f"{words(status)}: {describe_counts(selectors.batch_counts(batch))}"
            if line != last:
                bar.clear()
                self.stdout.write(f"{clock.stamp()} {line}")
                last = line
            finished = status not in UNFINISHED_BATCH
            if finished:
                bar.clear()
                self.stdout.write(f"done in {clock.stamp().strip('[] ')}, cost {usd(selectors.batch_cost(batch))}")
                return batch
            bar.update(progress, f"{batch.n_succeeded + batch.n_failed + batch.n_cancelled}/{batch.n_total} done")
            time.sleep(poll_seconds)
