"""How money and durations are shown to people (admin, command output): never a raw Decimal, float or dict."""

from decimal import Decimal


def usd(value, places: int = 4) -> str:
    """`$0.6075` for a cost; an em dash when there is none yet. Sums from the database can come back with
    fifteen places (`0.607500000000000`), so every shown amount goes through here."""
    if value is None:
        return "—"
    return f"${Decimal(value):.{places}f}"


def elapsed(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `2 h 03 min`."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
