"""Fixtures for the provider tests: simulated outside services on real ports."""

import pytest

from providers.simulators.vastai import VastAISimulator
from providers.vastai import DEFAULT_MIN_INTERVALS, VastAIClient

# Pacing is proven by its own test; elsewhere it would only slow the suite down.
VAST_SIM_MIN_INTERVALS = dict.fromkeys(DEFAULT_MIN_INTERVALS, 0.0)


@pytest.fixture
def vast_sim_factory(settings):
    """Starts simulated vast.ai clouds (stopped after the test); the last one started is `VAST_API_URL`."""
    started = []

    def start(**kwargs):
        kwargs.setdefault("api_key", settings.VAST_API_KEY)
        kwargs.setdefault("boot_seconds", 0.2)
        kwargs.setdefault("loading_seconds", 0.2)
        kwargs.setdefault("swarmui_generation_seconds", 0.2)
        sim = VastAISimulator(**kwargs).start()
        started.append(sim)
        settings.VAST_API_URL = sim.url
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def vast_sim(vast_sim_factory):
    """A simulated vast.ai cloud with the default offers; settings.VAST_API_URL points at it."""
    return vast_sim_factory()


@pytest.fixture
def vast_sim_client(vast_sim, settings):
    """A VastAIClient for `vast_sim`, built from the settings, without pacing."""
    return VastAIClient(settings.VAST_API_URL, settings.VAST_API_KEY, min_intervals=VAST_SIM_MIN_INTERVALS)
