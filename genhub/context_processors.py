from django.conf import settings

from jobs.selectors import alerts_open


def simulation(request):
    """Tells every page whether the outside world is simulated, so the banner is never forgotten."""
    return {"genhub_simulated": settings.GENHUB_SIMULATED}


def alerts(request):
    """The open alerts the user may see, for the banner on every page: one query, with their batches.

    Left lazy (a queryset) so that a page that passes its own `open_alerts` (the batch page, which
    shows its batch's alerts in place) costs no second query."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"open_alerts": []}
    return {"open_alerts": alerts_open(user=user)}
