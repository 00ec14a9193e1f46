"""vast's daily search quota: never retried, recorded for every process, alerted on, and a reason to fall back."""

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from gpu_instances.models import GpuInstance, OfferSearch
from gpu_instances.orchestrator import VastAIOrchestrator
from gpu_instances.selectors import gpu_rental_blocked_until
from jobs import services
from jobs.alerts import alerts_check
from jobs.models import Alert, BatchRun, Job
from providers.vastai import OfferFilters, SearchQuotaExceeded, quota_reset_time
from tests.conftest import wait_for
from tests.jobs.factories import make_batch

pytestmark = pytest.mark.django_db
State = GpuInstance.State


def searches(sim) -> int:
    return sim.paths().count("POST /api/v0/bundles/")


def next_utc_midnight() -> datetime:
    now = datetime.now(UTC)
    return (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture
def demand(user):
    return make_batch(user, provider="vastai")


def test_the_search_quota_429_is_not_retried_like_an_ordinary_429(vast_sim, vast_sim_client):
    vast_sim.exhaust_search_quota()

    with pytest.raises(SearchQuotaExceeded) as caught:
        vast_sim_client.search_offers(OfferFilters())

    assert searches(vast_sim) == 1
    assert caught.value.resets_at == next_utc_midnight()
    assert "quota" in caught.value.message and "test-vast-key" not in caught.value.message


def test_the_reset_time_is_the_next_utc_midnight_unless_vast_says_otherwise():
    now = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    assert quota_reset_time(None, now=now) == datetime(2026, 12, 2, tzinfo=UTC)
    assert quota_reset_time("3600", now=now) == now + timedelta(hours=1)
    assert quota_reset_time(str(now.timestamp() + 60), now=now) == now + timedelta(minutes=1)
    assert quota_reset_time("garbage", now=now) == datetime(2026, 12, 2, tzinfo=UTC)
    assert quota_reset_time(str(now.timestamp() + 5 * 86400), now=now) == datetime(2026, 12, 2, tzinfo=UTC)


def test_a_reset_vast_dates_seconds_ago_is_a_difference_of_clocks_not_a_reason_to_wait_for_midnight():
    now = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    assert quota_reset_time(str(now.timestamp() - 4), now=now) == now + timedelta(minutes=1)
    assert quota_reset_time(str(now.timestamp() - 3 * 3600), now=now) == datetime(2026, 12, 2, tzinfo=UTC)


def test_the_simulated_quota_resets_by_itself_at_the_time_it_announced(vast_sim, vast_sim_client):
    vast_sim.exhaust_search_quota(reset_at=time.time() + 0.5)
    with pytest.raises(SearchQuotaExceeded):
        vast_sim_client.search_offers(OfferFilters())
    wait_for(lambda: not vast_sim.search_quota_exhausted, timeout=5, message="the announced reset")
    assert vast_sim_client.search_offers(OfferFilters())


def test_a_used_up_quota_stops_every_search_until_it_resets_and_raises_an_alert(vast_sim, demand):
    vast_sim.exhaust_search_quota()
    orchestrator = VastAIOrchestrator()

    for _ in range(5):
        outcome, _ = orchestrator.step()
    assert searches(vast_sim) == 1  # the first answer blocked the rest
    assert "quota" in outcome and "paused until" in outcome
    assert OfferSearch.objects.get().blocked_until == next_utc_midnight()
    assert "quota" in GpuInstance.objects.get().events.filter(kind="error").first().message

    assert "vast_search_quota" in alerts_check()
    alert = Alert.objects.get(key="vast_search_quota", resolved_at__isnull=True)
    assert alert.kind == Alert.Kind.VAST_SEARCH_QUOTA
    assert "paused until" in alert.message and "quota" in alert.message

    # The quota resets: the next step searches again, rents, and the alert resolves.
    vast_sim.exhaust_search_quota(False)
    OfferSearch.objects.update(blocked_until=timezone.now() - timedelta(seconds=1))
    orchestrator.step()
    assert GpuInstance.objects.get().state == State.LOADING
    alerts_check()
    assert not Alert.objects.filter(key="vast_search_quota", resolved_at__isnull=True).exists()


def test_an_offer_list_is_reused_for_a_while_but_never_an_offer_twice(vast_sim, demand, settings):
    settings.VAST_OFFER_CACHE_SECONDS = 60
    orchestrator = VastAIOrchestrator()
    orchestrator.step()
    first = GpuInstance.objects.get()
    orchestrator.destroy(first, "operator: test")
    orchestrator.step()  # a replacement from the same list

    second = GpuInstance.objects.get(state__in=GpuInstance.ACTIVE_STATES)
    assert second.vast_id and second.offer_id != first.offer_id
    assert searches(vast_sim) == 1


def test_work_falls_back_to_fal_at_once_when_the_quota_blocks_renting_longer_than_the_batch_would_wait(
        vast_sim, user):
    batch = make_batch(user, provider="vastai", count=2)
    BatchRun.objects.filter(pk=batch.pk).update(fallback_policy="unrecoverable", fallback_after=30)
    Job.objects.update(status=Job.Status.WAITING_FOR_GPU)
    assert services.jobs_fall_back_while_gpu_unavailable(provider_name="vastai") == 0  # 30 min not over

    # Hours away (not "the next UTC midnight", which may be minutes away when this runs).
    vast_sim.exhaust_search_quota(reset_at=time.time() + 3 * 3600)
    VastAIOrchestrator().step()

    assert services.jobs_fall_back_while_gpu_unavailable(provider_name="vastai") == 2
    job = batch.jobs.first()
    assert (job.provider, job.fallback_from) == ("fal", "vastai")
    assert "search quota" in job.fallback_reason


def test_the_operator_sees_the_block_in_instance_status_and_the_admin(vast_sim, demand, admin_client):
    from io import StringIO

    from django.core.management import call_command

    vast_sim.exhaust_search_quota()
    VastAIOrchestrator().step()

    out = StringIO()
    call_command("instance_status", stdout=out)
    assert "offer search paused until" in out.getvalue() and "quota" in out.getvalue()
    page = admin_client.get("/admin/gpu_instances/offersearch/")
    assert page.status_code == 200 and b"quota" in page.content


def test_while_the_quota_is_used_up_a_lost_instance_is_replaced_from_the_last_offer_list(vast_sim, demand, settings):
    """Without it, an instance lost in the morning would not be replaced before midnight."""
    settings.VAST_OFFER_CACHE_SECONDS = 60
    orchestrator = VastAIOrchestrator()
    orchestrator.step()
    first = GpuInstance.objects.get()
    OfferSearch.objects.update(searched_at=timezone.now() - timedelta(hours=3))  # an old list, not fresh
    vast_sim.exhaust_search_quota(reset_at=time.time() + 3 * 3600)
    orchestrator.destroy(first, "operator: test")

    orchestrator.step()

    second = GpuInstance.objects.get(state__in=GpuInstance.ACTIVE_STATES)
    assert second.state == State.LOADING and second.offer_id != first.offer_id
    assert searches(vast_sim) == 2  # the one the quota refused; the rental came from the last list
    assert OfferSearch.objects.get().blocked_until is not None  # the block (and its alert) stand
    assert gpu_rental_blocked_until() is None  # renting is not blocked while that list holds offers


def test_an_instance_rented_from_an_old_list_is_costed_at_the_price_vast_bills(vast_sim, demand, settings):
    settings.VAST_OFFER_CACHE_SECONDS = 3600
    orchestrator = VastAIOrchestrator()
    orchestrator.step()
    first = GpuInstance.objects.get()
    for offer in vast_sim.offers.values():  # the market moved since the list was found
        offer["dph_base"] = round(offer["dph_base"] + 0.25, 4)
    orchestrator.destroy(first, "operator: test")
    orchestrator.step()
    second = GpuInstance.objects.get(state__in=GpuInstance.ACTIVE_STATES)
    listed = second.dph_usd

    orchestrator.step()  # follows its boot: vast's own figure for the instance

    second.refresh_from_db()
    assert second.dph_usd == listed + Decimal("0.25")
    assert second.events.filter(kind="price", message__contains=f"listed ${listed}/h").exists()


def test_once_the_last_offer_list_is_used_up_renting_waits_for_the_reset(vast_sim, demand):
    orchestrator = VastAIOrchestrator()
    orchestrator.step()
    vast_sim.exhaust_search_quota(reset_at=time.time() + 3 * 3600)
    for offer_id in vast_sim.offers:  # the whole market rented by others meanwhile
        vast_sim.vanish_offer(offer_id)
    orchestrator.destroy(GpuInstance.objects.get(), "operator: test")

    # The offers on hand are tried (all gone), then the search the quota refuses; then renting waits.
    outcomes = [orchestrator.step()[0] for _ in range(3)]

    assert not GpuInstance.objects.filter(state=State.LOADING).exists()
    assert "could not rent" in outcomes[0] and "quota" in outcomes[1] and "paused until" in outcomes[2]
    assert OfferSearch.objects.get().offers == [] and searches(vast_sim) == 2
    assert gpu_rental_blocked_until() is not None
