"""Template filters for money and time, the same wording as `genhub.formatting`."""

from decimal import Decimal

from django import template
from django.utils import timezone

from genhub import formatting

register = template.Library()


@register.filter
def per_hour(dph) -> str:
    """$1.1208/h (or — when the price is not known)."""
    return "—" if dph is None else f"${formatting.format_rate(Decimal(dph))}/h"


@register.filter
def ago(moment) -> str:
    return formatting.format_ago(moment) if moment else "never"


@register.filter
def duration(seconds) -> str:
    return "—" if seconds is None else formatting.format_duration(float(seconds))


@register.filter
def plural(count, noun: str) -> str:
    """{{ n|plural:"job" }} → 1 job, 4 jobs; {{ n|plural:"is,are" }}-style pairs: "child,children"."""
    singular, _, many = noun.partition(",")
    return formatting.plural(int(count), singular, many or None)


@register.filter
def age(moment, until=None) -> str:
    """How long since `moment` (or from it to `until`): "45 s", "3 min 5 s", "2 h 10 min"."""
    if not moment:
        return "—"
    return formatting.format_duration(((until or timezone.now()) - moment).total_seconds())
