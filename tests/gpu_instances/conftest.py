import pytest


@pytest.fixture(autouse=True)
def quick_reconcile(settings):
    settings.GENHUB_RECONCILE_INTERVAL = 0.05
    settings.VAST_HEALTH_MIN_SECONDS = 0.3
    settings.VAST_HEALTH_TIMEOUT_SECONDS = 1.0
