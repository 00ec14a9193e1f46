"""Which offer to rent: the one with the lowest expected cost per clip, not the lowest $/hour.

An offer's expected cost per clip is its $/h × the expected GPU seconds per clip (`speed`) for its
machine when genhub has run on it, else for its GPU model, else the shipped table; an unknown model is
estimated conservatively, so it wins only when it is much cheaper. The clip is the one the waiting jobs
ask for (the most common parameters among them), or the reference clip when none wait.

Machines with a bad record are left out: those avoided after a failure (already excluded from the search)
and those whose own history is more than VAST_QUALIFY_TOLERANCE × slower than their GPU model's.
"""

from dataclasses import dataclass

from django.conf import settings
from django.utils.module_loading import import_string

from gpu_instances import speed
from providers.vastai import Offer


@dataclass(frozen=True)
class RankedOffer:
    offer: Offer
    estimate: speed.SpeedEstimate
    cost_per_clip: float  # USD

    def describe(self) -> str:
        estimate = self.estimate
        if estimate.samples:
            where = "this machine" if estimate.basis == "machine" else "this GPU model"
            basis = f"from {estimate.samples} sample{'s' if estimate.samples != 1 else ''} on {where}"
        elif estimate.basis == "table":
            basis = "from the shipped table"
        else:
            basis = "unknown GPU model, estimated conservatively"
        return f"${self.cost_per_clip:.4f} per clip ({self.estimate.median:.1f} s/clip {basis})"


def planning_params() -> dict:
    """The clip the waiting jobs ask for, through the jobs layer's hook; the reference clip if none wait."""
    path = settings.GENHUB_GPU_HOOKS.get("waiting_params")
    params = import_string(path)() if path else None
    return params or dict(speed.REFERENCE_PARAMS)


def rank_offers(offers: list[Offer], *, params: dict) -> tuple[list[RankedOffer], list[str]]:
    """(offers cheapest per clip first, notes on the machines left out). Ties go to the lower $/h."""
    ranked, excluded = [], []
    for offer in offers:
        estimate = speed.expected_seconds_per_clip(params=params, machine_id=offer.machine_id,
                                                   gpu_name=offer.gpu_name)
        if estimate.basis == "machine":
            model = speed.expected_seconds_per_clip(params=params, gpu_name=offer.gpu_name)
            if estimate.median > settings.VAST_QUALIFY_TOLERANCE * model.median:
                excluded.append(f"machine {offer.machine_id} ({offer.gpu_name}): {estimate.median:.1f} s/clip, "
                                f"far slower than its model's {model.median:.1f} s")
                continue
        ranked.append(RankedOffer(offer=offer, estimate=estimate,
                                  cost_per_clip=offer.dph_total * estimate.median / 3600))
    ranked.sort(key=lambda row: (row.cost_per_clip, row.offer.dph_total))
    return ranked, excluded


def rental_reason(ranked: list[RankedOffer], rented: Offer, *, params: dict, excluded: list[str]) -> str:
    """Why this offer won, for the rental event."""
    mine = next(row for row in ranked if row.offer.id == rented.id)
    others = [row for row in ranked if row.offer.id != rented.id and row.cost_per_clip >= mine.cost_per_clip]
    text = f"expected {mine.describe()} for {speed.describe_shape(speed.clip_shape(params))}"
    if others:
        best = others[0]
        text += (f"; next best {best.offer.gpu_name} at ${best.offer.dph_total:.3f}/h on machine "
                 f"{best.offer.machine_id}: {best.describe()}")
    else:
        text += "; no other offer"
    if excluded:
        text += f"; left out for a slow record: {'; '.join(excluded)}"
    return text
