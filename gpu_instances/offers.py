"""vast.ai offers for the orchestrator: a short-lived shared cache, and the daily search quota.

Searches are scarce: vast allows 10 a minute and a daily quota that resets only at UTC midnight
(reference §5). So an offer list is reused for VAST_OFFER_CACHE_SECONDS (minus the offers rented or
found gone meanwhile: an offer id is never rented twice from one list), and a `search_quota_exceeded`
answer blocks every search, in every process, until the quota resets. Meanwhile the last list found,
however old, is still tried: a market of hundreds of machines keeps most of its offers for hours, and a
create on an offer that is gone costs one quick refusal, whereas without it an instance lost in the
morning would not be replaced before midnight. Once none of that list can be rented, renting waits for
the reset (and `fallback=unrecoverable` can move the work to fal).
"""

import hashlib
import json
import logging
from dataclasses import asdict
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from gpu_instances.models import OfferSearch
from providers.errors import ProviderError
from providers.vastai import Offer, OfferFilters, SearchQuotaExceeded, VastAIClient

log = logging.getLogger(__name__)
ROW = "vast"


class SearchBlocked(ProviderError):
    """No search may be made before `until`: the daily quota is used up."""

    def __init__(self, message: str, *, until):
        super().__init__(message, code="search_quota_exceeded", permanent=False)
        self.until = until


def _row() -> OfferSearch:
    try:
        with transaction.atomic():
            return OfferSearch.objects.get_or_create(name=ROW)[0]
    except IntegrityError:
        return OfferSearch.objects.get(name=ROW)


def _key(filters: OfferFilters) -> str:
    return hashlib.sha256(json.dumps(filters.query(limit=0), sort_keys=True).encode()).hexdigest()


def offers_find(vast: VastAIClient, filters: OfferFilters) -> list[Offer]:
    """Matching offers, cheapest first: the cached list while it is fresh, else a new search.

    Raises SearchBlocked while the quota is used up (without calling vast), and ProviderError when the
    search fails.
    """
    row = _row()
    now = timezone.now()
    key = _key(filters)
    last = [Offer(**data) for data in row.offers] if row.filters_key == key else []
    # Cached without the machine exclusions, which change more often than the market and apply locally.
    last = [offer for offer in last if offer.machine_id not in filters.exclude_machine_ids]
    if row.blocked_until and row.blocked_until > now:
        block = SearchBlocked(f"offer search paused until {row.blocked_until:%Y-%m-%d %H:%M} UTC: "
                              f"{row.blocked_reason}", until=row.blocked_until)
    else:
        fresh_since = now - timedelta(seconds=settings.VAST_OFFER_CACHE_SECONDS)
        if last and row.searched_at and row.searched_at >= fresh_since:
            return last
        try:
            offers = vast.search_offers(filters)
        except SearchQuotaExceeded as exc:
            OfferSearch.objects.filter(name=ROW).update(
                blocked_until=exc.resets_at, blocked_at=now,
                blocked_reason="vast.ai's daily offer-search quota is used up (search_quota_exceeded); it resets "
                               "at UTC midnight and repeating the search would only burn more of it")
            log.error("vast.ai search quota used up: no offer search until %s", exc.resets_at)
            block = SearchBlocked(exc.message, until=exc.resets_at)
        else:
            OfferSearch.objects.filter(name=ROW).update(filters_key=key, searched_at=now,
                                                        offers=[asdict(offer) for offer in offers],
                                                        blocked_until=None, blocked_reason="")
            return offers
    if not last:
        raise block
    log.warning("offer search paused by vast.ai's quota: trying the %d offer(s) of the last search (%s)",
                len(last), f"{row.searched_at:%H:%M} UTC" if row.searched_at else "earlier")
    return last


def offers_forget(offer_ids) -> None:
    """Drops offers just rented or found gone from the cached list (never rent one id twice)."""
    ids = set(offer_ids)
    if not ids:
        return
    with transaction.atomic():
        row = OfferSearch.objects.select_for_update().filter(name=ROW).first()
        if row:
            row.offers = [data for data in row.offers if data.get("id") not in ids]
            row.save(update_fields=["offers"])


def offers_invalidate() -> None:
    OfferSearch.objects.filter(name=ROW).update(offers=[], searched_at=None)


def offers_left_to_try() -> bool:
    """Whether an offer list is kept that a rental can still try (while searches are paused, the last one)."""
    return OfferSearch.objects.filter(name=ROW).exclude(offers=[]).exists()
