from django.conf import settings


def simulation(request):
    """Tells every page whether the outside world is simulated, so the banner is never forgotten."""
    return {"genhub_simulated": settings.GENHUB_SIMULATED}
