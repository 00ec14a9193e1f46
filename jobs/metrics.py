"""genhub's figures in the Prometheus text format, read from the database at scrape time.

Nothing is counted in process memory: web workers, the cluster and commands all write the same rows,
so a collector that queries them when scraped is right whichever process serves `/metrics`, needs no
multi-process bookkeeping and survives restarts. Counters and histograms are derived from rows that
are kept (jobs and instances are history), so they only grow; deleting batches would lower them.
"""

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from gpu_instances.models import GpuInstance
from gpu_instances.selectors import instance_active
from gpu_instances.services import NOT_REPLACEMENTS, instance_age_seconds, instance_cost_so_far, instance_end_cause
from jobs.models import Job, Provider

S = Job.Status
# Seconds. Waiting spans a GPU boot (minutes); a clip takes about a minute on the GPU, more at fal.
QUEUE_WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
GENERATION_BUCKETS = (10, 30, 60, 90, 120, 180, 300, 600, 1200, 1800)


def _duration(end: str, start: str):
    return ExpressionWrapper(F(end) - F(start), output_field=DurationField())


def _seconds(value) -> float:
    if value is None:
        return 0.0
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _histogram(name, documentation, rows, buckets):
    family = HistogramMetricFamily(name, documentation, labels=["provider"])
    for row in rows:
        cumulative = [(str(float(b)), row[f"le_{i}"]) for i, b in enumerate(buckets)]
        cumulative.append(("+Inf", row["count"]))
        family.add_metric([row["provider"]], cumulative, sum_value=row["sum"])
    return family


class GenhubCollector:
    def collect(self):
        yield self._jobs()
        yield self._queue_wait()
        yield self._generation()
        yield from self._instances()
        yield self._spend()
        in_flight = Job.objects.filter(provider=Provider.FAL, status=S.RUNNING).exclude(external_id="").count()
        yield GaugeMetricFamily("genhub_fal_requests_in_flight", "Requests submitted to fal and not settled yet",
                                value=in_flight)

    def _jobs(self):
        family = GaugeMetricFamily("genhub_jobs", "Jobs by provider and state", labels=["provider", "state"])
        counts = {(row["provider"], row["status"]): row["n"]
                  for row in Job.objects.values("provider", "status").annotate(n=Count("id")).order_by()}
        for provider in Provider.values:  # every combination, so a state that empties shows 0, not a gap
            for state in S.values:
                family.add_metric([provider, state], counts.get((provider, state), 0))
        return family

    def _queue_wait(self):
        """From a job's creation to the start of its latest attempt (requeued jobs start again)."""
        wait = _duration("started_at", "created_at")
        started = Job.objects.filter(started_at__isnull=False).annotate(wait=wait)
        rows = started.values("provider").order_by().annotate(
            count=Count("id"), total=Sum("wait"),
            **{f"le_{i}": Count("id", filter=Q(wait__lte=timedelta(seconds=b)))
               for i, b in enumerate(QUEUE_WAIT_BUCKETS)})
        rows = [{**row, "sum": _seconds(row["total"])} for row in rows]
        return _histogram("genhub_job_queue_wait_seconds", "Time from a job's creation to its latest start",
                          rows, QUEUE_WAIT_BUCKETS)

    def _generation(self):
        """Succeeded jobs: the GPU's own generation time where measured (vast), else start to finish (fal)."""
        measured = Q(generation_seconds__isnull=False)
        done = Job.objects.filter(status=S.SUCCEEDED, started_at__isnull=False, finished_at__isnull=False).annotate(
            took=_duration("finished_at", "started_at"))
        rows = done.values("provider").order_by().annotate(
            count=Count("id"), measured_sum=Sum("generation_seconds", filter=measured),
            elapsed_sum=Sum("took", filter=~measured),
            **{f"le_{i}": Count("id", filter=(measured & Q(generation_seconds__lte=b))
                                | (~measured & Q(took__lte=timedelta(seconds=b))))
               for i, b in enumerate(GENERATION_BUCKETS)})
        rows = [{**row, "sum": _seconds(row["measured_sum"]) + _seconds(row["elapsed_sum"])} for row in rows]
        return _histogram("genhub_job_generation_seconds", "Generation time of succeeded jobs", rows,
                          GENERATION_BUCKETS)

    def _instances(self):
        active = instance_active()
        state = GaugeMetricFamily("genhub_gpu_instance_state", "1 for the active GPU instance's state",
                                  labels=["state"])
        for value in GpuInstance.State.values:
            state.add_metric([value], 1 if active and active.state == value else 0)
        yield state

        busy = GaugeMetricFamily(
            "genhub_gpu_instance_busy_fraction",
            "Share of the active instance's rented time spent generating (0 without an instance)")
        fraction = 0.0
        if active:
            age = instance_age_seconds(active)
            generating = Job.objects.filter(instance=active).aggregate(s=Sum("generation_seconds"))["s"] or 0.0
            fraction = min(1.0, generating / age) if age else 0.0
        busy.add_metric([], fraction)
        yield busy

        running = Job.objects.filter(instance=active, status=S.RUNNING).count() if active else 0
        yield GaugeMetricFamily("genhub_gpu_instance_jobs_running", "Jobs on the active instance now (at most "
                                f"VAST_MAX_IN_FLIGHT={settings.VAST_MAX_IN_FLIGHT})", value=running)

        replacements = CounterMetricFamily("genhub_gpu_instance_replacements",
                                           "GPU instances genhub gave up on and replaced, by cause", labels=["cause"])
        causes: dict[str, int] = {}
        ended = GpuInstance.objects.exclude(end_reason="").values_list("end_reason", flat=True)
        for reason in ended:
            cause = instance_end_cause(reason)
            if cause not in NOT_REPLACEMENTS:
                causes[cause] = causes.get(cause, 0) + 1
        for cause, count in sorted(causes.items()):
            replacements.add_metric([cause], count)
        yield replacements

    def _spend(self):
        """What was billed: fal per clip (bad clips it billed included), vast per rented hour (boot and idle too)."""
        family = CounterMetricFamily("genhub_spend_usd", "Money spent, by provider (USD)", labels=["provider"])
        fal = Job.objects.filter(provider=Provider.FAL).aggregate(s=Sum("cost_usd"))["s"] or Decimal("0")
        vast = sum((instance_cost_so_far(i) for i in GpuInstance.objects.exclude(dph_usd=None)), Decimal("0"))
        family.add_metric([Provider.FAL], float(fal))
        family.add_metric([Provider.VASTAI], float(vast))
        return family


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(GenhubCollector())
