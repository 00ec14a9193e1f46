"""How money is shown to people (admin, command output): fixed places, never a raw Decimal or float."""

from decimal import Decimal


def usd(value, places: int = 4) -> str:
    """`$0.6075` for a cost; an em dash when there is none yet. Sums from the database can come back with
    fifteen places (`0.607500000000000`), so every shown amount goes through here."""
    if value is None:
        return "—"
    return f"${Decimal(value):.{places}f}"
