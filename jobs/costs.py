"""What a job costs, in exact decimals (USD, 4 places)."""

from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings

from genhub.formatting import format_rate  # noqa: F401 (jobs' callers import it from here)

CENT_FRACTION = Decimal("0.0001")


def fal_cost(params: dict) -> Decimal:
    """fal bills Wan 2.2 A14B per video-second, counting seconds at 16 fps whatever fps was asked."""
    price = settings.FAL_PRICE_PER_VIDEO_SECOND[params["resolution"]]
    seconds = Decimal(params["num_frames"]) / Decimal(settings.FAL_BILLING_FPS)
    return (seconds * price).quantize(CENT_FRACTION, rounding=ROUND_HALF_UP)


def gpu_cost(*, dph_usd: Decimal, seconds: float) -> Decimal:
    """A share of the rented instance: its hourly price × the seconds this job held the GPU."""
    return (Decimal(dph_usd) * Decimal(str(round(seconds, 3))) / Decimal(3600)).quantize(
        CENT_FRACTION, rounding=ROUND_HALF_UP)


def job_cost(*, provider: str, params: dict, meta: dict) -> Decimal | None:
    if provider == "fal":
        return fal_cost(params)
    if meta.get("dph_usd") is not None and meta.get("generation_seconds") is not None:
        return gpu_cost(dph_usd=meta["dph_usd"], seconds=meta["generation_seconds"])
    return None


