"""How genhub writes money and time for people, in one place: pages, the admin, the API's messages and
commands all say "$0.6075", "$1.1208/h" and "2 min 10 s" the same way — never a raw Decimal, float or dict."""

from datetime import datetime
from decimal import Decimal

from django.utils import timezone


def usd(value, places: int = 4) -> str:
    """`$0.6075` for a cost; an em dash when there is none yet. Sums from the database can come back with
    fifteen places (`0.607500000000000`), so every shown amount goes through here."""
    if value is None:
        return "—"
    return f"${Decimal(value):.{places}f}"


def format_rate(dph: Decimal) -> str:
    """An hourly price as people write it: 2.00, 1.50, 1.1208 (never 2.0000)."""
    text = f"{Decimal(dph):.4f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"{whole}.{cents.ljust(2, '0')}"


def format_duration(seconds: float) -> str:
    """45 s, 2 min 10 s, 1 h 5 min: as precise as a person reading it needs."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes >= 10:
        seconds = 0  # past ten minutes, seconds are noise
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def format_ago(moment: datetime, now: datetime | None = None) -> str:
    """"just now" for the last 10 seconds, then "25 s ago", "3 min ago", "2 h 5 min ago"."""
    elapsed = ((now or timezone.now()) - moment).total_seconds()
    if elapsed < 10:
        return "just now"
    text = format_duration(elapsed)
    if " min " in text:  # "3 min ago": seconds are noise beyond the first minute
        text = text.split(" min ")[0] + " min"
    return f"{text} ago"


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """'1 job', '4 jobs', '0 jobs'."""
    return f"{count} {noun if count == 1 else (plural_noun or noun + 's')}"
