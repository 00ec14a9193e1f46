"""`GET /metrics`: the Prometheus scrape, for staff (session) or a scraper with GENHUB_METRICS_TOKEN."""

import hmac

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from jobs.metrics import REGISTRY


def _bearer(request) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def _denied(request) -> HttpResponse | None:
    token = _bearer(request)
    if token is not None:
        expected = settings.GENHUB_METRICS_TOKEN
        # Constant-time compare; an unset setting accepts no token at all.
        if expected and hmac.compare_digest(token.encode(), expected.encode()):
            return None
        return HttpResponse("the bearer token is not valid for /metrics\n", status=403, content_type="text/plain")
    if request.user.is_authenticated:
        if request.user.is_staff:
            return None
        return HttpResponse("/metrics is for staff\n", status=403, content_type="text/plain")
    response = HttpResponse("log in as staff or send Authorization: Bearer <GENHUB_METRICS_TOKEN>\n", status=401,
                            content_type="text/plain")
    response["WWW-Authenticate"] = 'Bearer realm="genhub metrics"'
    return response


@require_GET
def metrics(request):
    denied = _denied(request)
    if denied:
        return denied
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
