"""The fal pump and the caps stay within a fixed number of queries whatever the queue's length, and a
slot freed in a pass is filled in that same pass."""

from decimal import Decimal

import pytest

from jobs import budget, dispatch, polled_pump
from jobs.models import BatchRun, Job
from providers.registry import get_provider
from tests.jobs.factories import make_batch
from tests.jobs.test_batch_counts import add_jobs

pytestmark = pytest.mark.django_db
S = Job.Status
CAPS_QUERIES = 12


@pytest.mark.parametrize("queued", [40, 1000])
def test_caps_are_applied_in_the_same_few_queries_for_40_or_1000_queued_jobs(user, queued,
                                                                             django_assert_max_num_queries):
    batch = make_batch(user, count=1, budget_usd=Decimal("2.00"))
    add_jobs(batch, queued - 1)
    other = make_batch(user, count=1)
    add_jobs(other, 9)

    with django_assert_max_num_queries(CAPS_QUERIES):
        paused, resumed = budget.apply_caps(provider_name="fal")

    # 17 frames at 480p are $0.0425 each: $2.00 admits 47 of them, in queue order.
    fits = min(queued, 47)
    assert (paused, resumed) == (queued - fits, 0)
    assert list(batch.jobs.order_by("position").values_list("status", flat=True)) == (
        [S.QUEUED] * fits + [S.PAUSED] * (queued - fits))
    assert other.jobs.filter(status=S.QUEUED).count() == 10
    BatchRun.objects.filter(pk=batch.pk).update(budget_usd=Decimal("1000"))
    with django_assert_max_num_queries(CAPS_QUERIES):
        assert budget.apply_caps(provider_name="fal") == (0, queued - fits)


def test_a_monthly_cap_pauses_in_queue_order_across_batches_with_bounded_queries(user, settings,
                                                                                django_assert_max_num_queries):
    settings.GENHUB_MONTHLY_BUDGET_USD = Decimal("0.20")
    first, second = make_batch(user, count=1), make_batch(user, count=1)
    add_jobs(first, 2)
    add_jobs(second, 300)

    with django_assert_max_num_queries(CAPS_QUERIES):
        budget.apply_caps(provider_name="fal")

    # $0.20 admits four $0.0425 clips: the first batch's three, then one of the second's.
    assert first.jobs.filter(status=S.QUEUED).count() == 3
    assert second.jobs.filter(status=S.QUEUED).count() == 1 and second.jobs.filter(status=S.PAUSED).count() == 300
    assert "monthly budget" in second.jobs.filter(status=S.PAUSED).first().paused_reason


@pytest.mark.parametrize("queued", [45, 400])
def test_a_submit_pass_takes_the_same_few_queries_for_any_queue_length(user, fal_sim, settings, queued,
                                                                       django_assert_max_num_queries):
    settings.FAL_MAX_IN_FLIGHT = 40
    batch = make_batch(user, count=1)
    add_jobs(batch, queued - 1)

    with django_assert_max_num_queries(8):
        polled_pump._submit_queued(get_provider("fal"))

    assert batch.jobs.filter(status=S.RUNNING).exclude(external_id="").count() == 40
    assert sum(fal_sim.submits.values()) == 40


def test_slots_freed_by_requests_that_finished_are_filled_in_the_same_pass(user, fal_sim, settings):
    settings.FAL_MAX_IN_FLIGHT = 4
    fal_sim.queue_seconds, fal_sim.run_seconds = 0.0, 0.0
    batch = make_batch(user, count=1)
    add_jobs(batch, 9)
    provider = get_provider("fal")
    polled_pump._submit_queued(provider)  # four in flight
    for _ in range(2):  # the simulator moves a request one step per look: queued → started → completed
        for record in list(fal_sim.requests.values()):
            fal_sim._advance(record)

    dispatch._pump_pass(provider)

    # The pass settled the four and submitted the next four at once: fal never sits idle for a poll.
    assert batch.jobs.filter(status=S.SUCCEEDED).count() == 4
    assert batch.jobs.filter(status=S.RUNNING).exclude(external_id="").count() == 4
