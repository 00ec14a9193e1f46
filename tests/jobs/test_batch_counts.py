"""The maintained per-batch counts (BatchCounts, kept by triggers) stay exactly what adding up the jobs
gives, through every transition the services, pumps and caps make."""

import random
from decimal import Decimal

import pytest
from django.db.models import Count, Q, Sum

from jobs import budget, counts_sql, services
from jobs.deadline import DEADLINE_REASON
from jobs.models import BatchCounts, BatchRun, Job
from tests.jobs.factories import make_batch

pytestmark = pytest.mark.django_db
S = Job.Status


# The planning counters, the slow way: what the ETA and the batch page used to count over the jobs.
PLANNING = {
    "n_fal_in_flight": Q(provider="fal", status__in=(S.QUEUED, S.RUNNING)),
    "n_gpu_waiting": Q(provider="vastai", status__in=(S.QUEUED, S.WAITING_FOR_GPU)),
    "n_gpu_running": Q(provider="vastai", status=S.RUNNING),
    "n_deadline_moved": Q(fallback_reason__startswith=DEADLINE_REASON),
}


def aggregated(batch_id: int) -> dict:
    """What the counts must be: the slow way, over every job."""
    jobs = Job.objects.filter(batch_id=batch_id)
    row = jobs.aggregate(n_total=Count("id"), cost_usd=Sum("cost_usd"), wasted_usd=Sum("wasted_usd"),
                         **{f"n_{s}": Count("id", filter=Q(status=s)) for s in S.values},
                         **{name: Count("id", filter=condition) for name, condition in PLANNING.items()})
    row["cost_usd"] = Decimal(row["cost_usd"] or 0).quantize(Decimal("0.0001"))
    row["wasted_usd"] = Decimal(row["wasted_usd"] or 0).quantize(Decimal("0.0001"))
    return row


def maintained(batch_id: int) -> dict:
    row = BatchCounts.objects.filter(batch_id=batch_id).values().get()
    row.pop("batch_id")
    return row


def add_jobs(batch: BatchRun, n: int) -> None:
    """More jobs like the batch's first one (same stored image), the way the bulk insert makes them."""
    first = batch.jobs.order_by("position").first()
    start = batch.jobs.count()
    Job.objects.bulk_create([
        Job(batch=batch, owner=batch.owner, provider=first.provider, position=start + i, input_image=first.input_image,
            input_name=f"copy{i}.png", input_sha256=first.input_sha256, prompt=first.prompt, seed=i,
            params=first.params) for i in range(n)])


def _pick(rng, batch, *statuses):
    ids = list(batch.jobs.filter(status__in=statuses).values_list("pk", "claims"))
    return rng.choice(ids) if ids else (None, None)


def _claim(rng, batch):
    pk, _ = _pick(rng, batch, S.QUEUED)
    pk and services.job_claim(job_id=pk)


def _succeed(rng, batch):
    pk, claim = _pick(rng, batch, S.RUNNING)
    pk and services.job_succeed(job_id=pk, claim=claim, cost=Decimal("0.0340"))


def _fail(rng, batch):
    pk, claim = _pick(rng, batch, S.RUNNING)
    pk and services.job_fail(job_id=pk, claim=claim, code="x", message="boom", permanent=rng.random() < 0.3)


def _requeue_stale(rng, batch):
    pk, claim = _pick(rng, batch, S.RUNNING)
    pk and services.jobs_requeue_lost(jobs=[(pk, claim)], code="worker_lost", message="gone")


def _billed_failure(rng, batch):
    pk, claim = _pick(rng, batch, S.RUNNING)
    if pk:
        services.job_add_cost(job_id=pk, cost=Decimal("0.0200"), wasted=True)
        services.job_fail(job_id=pk, claim=claim, code="bad_output", message="undecodable", permanent=False)


def _keep_and_store(rng, batch):
    pk, claim = _pick(rng, batch, S.RUNNING)
    if pk and services.job_keep_result(job_id=pk, claim=claim, pending={"spool": "x"}, cost=Decimal("0.05"),
                                       message="disk full"):
        if rng.random() < 0.7:
            services.job_store_kept(job_id=pk)
        else:
            services.job_kept_result_lost(job_id=pk, message="gone")


def _cancel_job(rng, batch):
    pk, _ = _pick(rng, batch, *Job.UNFINISHED)
    pk and services.job_cancel(job=Job.objects.get(pk=pk))


def _retry_job(rng, batch):
    pk, _ = _pick(rng, batch, S.FAILED, S.CANCELLED)
    pk and services.job_retry(job=Job.objects.get(pk=pk))


def _cancel_batch(rng, batch):
    if rng.random() < 0.2:
        services.batch_cancel(batch=batch)


def _retry_batch(rng, batch):
    services.batch_retry_failed(batch=batch)


def _park_and_unpark(rng, batch):
    # What the vast pump does with no GPU ready and when one comes back, set-based.
    Job.objects.filter(batch=batch, status=S.QUEUED).update(status=S.WAITING_FOR_GPU)
    if rng.random() < 0.5:
        Job.objects.filter(batch=batch, status=S.WAITING_FOR_GPU).update(status=S.QUEUED)


def _fall_back(rng, batch):
    pk, _ = _pick(rng, batch, S.QUEUED, S.WAITING_FOR_GPU)
    pk and services.job_fall_back(job_id=pk, from_states=(S.QUEUED, S.WAITING_FOR_GPU), reason="GPU gone")


def _deadline_move(rng, batch):
    # What the deadline planner does: the last waiting GPU jobs to fal, in one update, with its reason.
    last = batch.jobs.filter(provider="vastai", status__in=(S.QUEUED, S.WAITING_FOR_GPU)).order_by("-position")
    services.jobs_fall_back(job_ids=list(last.values_list("pk", flat=True)[:2]),
                            reason=f"{DEADLINE_REASON} moved to fal to finish by 09:00")


def _cap(rng, batch):
    # A cap that pauses part of the queue, and later one that lets it all go: apply_caps in one pass.
    cap = rng.choice([Decimal("0.05"), Decimal("0.30"), None])
    BatchRun.objects.filter(pk=batch.pk).update(budget_usd=cap)
    budget.apply_caps(provider_name=batch.provider)
    budget.apply_caps(provider_name="fal")


def _add_by_url(rng, batch):
    """An appended item by URL: it waits `fetching`, then its image comes (queued) or does not (failed)."""
    first = batch.jobs.order_by("position").first()
    if first is None:
        return
    Job.objects.create(batch=batch, owner=batch.owner, provider=first.provider, position=batch.jobs.count(),
                       status=S.FETCHING, image_url="https://images.example.com/a.png", input_image="",
                       input_name="a.png", prompt=first.prompt, seed=rng.randrange(10_000), params=first.params)


def _image_arrives(rng, batch):
    pk, _ = _pick(rng, batch, S.FETCHING)
    if pk and rng.random() < 0.5:
        services.jobs_image_unavailable(job_ids=[pk], reason="HTTP 404")
    elif pk:
        Job.objects.filter(pk=pk, status=S.FETCHING).update(status=S.QUEUED)


def _delete_a_job(rng, batch):
    pk, _ = _pick(rng, batch, *S.values)
    if pk and rng.random() < 0.2:
        Job.objects.filter(pk=pk).delete()


TRANSITIONS = [_claim, _claim, _claim, _succeed, _succeed, _fail, _requeue_stale, _billed_failure, _keep_and_store,
               _cancel_job, _retry_job, _cancel_batch, _retry_batch, _park_and_unpark, _fall_back, _deadline_move, _cap,
               _add_by_url, _image_arrives, _delete_a_job]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batch_counts_stay_exact_through_random_transitions(user, seed):
    rng = random.Random(seed)
    batches = [make_batch(user, provider="fal", count=1), make_batch(user, provider="vastai", count=1)]
    for batch in batches:
        add_jobs(batch, 11)
    seen = set()
    for step in range(200):
        batch = rng.choice(batches)
        transition = rng.choice(TRANSITIONS)
        transition(rng, batch)
        seen |= set(Job.objects.values_list("status", flat=True))
        for each in batches:
            assert maintained(each.pk) == aggregated(each.pk), f"after step {step}: {transition.__name__}"
    # The walk went through every state (storing is passed through within one step).
    assert seen >= set(S.values) - {S.STORING}, seen


def test_the_planning_counters_follow_provider_and_reason_changes_without_a_status_change(user):
    """A fallback changes a job's provider (and the planner's reason) but not its status: the GPU's counts
    go down and fal's up in the same statement."""
    batch = make_batch(user, provider="vastai", count=3)
    assert maintained(batch.pk)["n_gpu_waiting"] == 3 and maintained(batch.pk)["n_fal_in_flight"] == 0

    services.jobs_fall_back(job_ids=list(batch.jobs.values_list("pk", flat=True)[:2]),
                            reason=f"{DEADLINE_REASON} moved to fal to finish by 09:00")

    counts = maintained(batch.pk)
    assert (counts["n_gpu_waiting"], counts["n_fal_in_flight"], counts["n_deadline_moved"]) == (1, 2, 2)
    assert counts == aggregated(batch.pk)


def test_the_triggers_know_the_deadline_planners_reason():
    # counts_sql cannot import the planner (migrations import it): the two spellings must stay one.
    assert counts_sql.DEADLINE_REASON == DEADLINE_REASON


def test_a_new_batch_has_counts_and_a_deleted_one_leaves_none(user):
    batch = make_batch(user, count=3)
    assert maintained(batch.pk)["n_total"] == 3 and maintained(batch.pk)["n_queued"] == 3
    empty = BatchRun.objects.create(owner=user, provider="fal")
    assert maintained(empty.pk) == aggregated(empty.pk)

    batch.delete()

    assert not BatchCounts.objects.filter(batch_id=batch.pk).exists()


def test_a_heartbeat_changes_no_count_and_no_change_mark(user):
    batch = make_batch(user, count=2)
    job = batch.jobs.first()
    services.job_claim(job_id=job.pk)
    mark = Job.objects.values_list("change_mark", flat=True).get(pk=job.pk)

    services.job_heartbeat(job_ids=[job.pk])

    assert Job.objects.values_list("change_mark", flat=True).get(pk=job.pk) == mark
    assert maintained(batch.pk) == aggregated(batch.pk)
