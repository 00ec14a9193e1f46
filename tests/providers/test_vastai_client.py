"""The vast.ai client against the simulated vast.ai cloud, over real HTTP: one test per protocol quirk
(vast.ai's REST API)."""

import json
import logging
import socket
import threading
import time

import pytest
import requests

from providers import instance_tls
from providers.addresses import GuardedAdapter
from providers.errors import ProviderError, TransientError
from providers.simulators.vastai import make_offer
from providers.swarmui_contract import SWARMUI_TOKEN_ENV
from providers.vastai import OfferFilters, OfferUnavailable, VastAIClient, build_create_request
from tests.conftest import VAST_SIM_MIN_INTERVALS

LABEL = "genhub-test-1a2b3c4d"


def body(label=LABEL, token="swarm-token-1"):
    return build_create_request(image="ghcr.io/genhub/swarmui:1", label=label, disk_gb=100, swarmui_token=token,
                                tls=instance_tls.generate())


def client_for(url, key, **kwargs):
    kwargs.setdefault("min_intervals", VAST_SIM_MIN_INTERVALS)
    return VastAIClient(url, key, **kwargs)


def wait_running(client, instance_id, timeout=10.0):
    """Polls until vast reports running; returns the instance and every actual_status seen on the way."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        instance = client.show_instance(instance_id)
        if not seen or seen[-1] != instance.actual_status:
            seen.append(instance.actual_status)
        if instance.actual_status == "running":
            return instance, seen
        time.sleep(0.05)
    raise AssertionError(f"instance {instance_id} never ran; saw {seen}")


def test_it_treats_instances_null_as_gone(vast_sim, vast_sim_client):
    instance_id = vast_sim_client.create_instance(101, body())
    assert vast_sim_client.show_instance(instance_id).label == LABEL

    vast_sim.kill_instance(instance_id, mode="vanish")

    assert vast_sim_client.show_instance(instance_id) is None
    assert vast_sim_client.show_instance(987654321) is None


@pytest.mark.parametrize("status", [400, 404, 410])
def test_it_moves_to_the_next_offer_when_an_offer_vanished(vast_sim, vast_sim_client, status):
    offers = vast_sim_client.search_offers(OfferFilters())
    vast_sim.vanish_offer(offers[0].id, status=status)  # rented by someone else after our search

    with pytest.raises(OfferUnavailable) as raised:
        vast_sim_client.create_instance(offers[0].id, body())
    assert not raised.value.permanent
    offer, instance_id = vast_sim_client.create_on_first_available(offers, body())

    assert offer == offers[1]
    assert [r["offer_id"] for r in vast_sim.instance_records()] == [offers[1].id]
    assert vast_sim_client.show_instance(instance_id).machine_id == offers[1].machine_id


def test_it_gives_up_when_every_offer_vanished(vast_sim, vast_sim_client):
    offers = vast_sim_client.search_offers(OfferFilters())
    for offer in offers:
        vast_sim.vanish_offer(offer.id)

    with pytest.raises(TransientError, match="none of the 4 offers"):
        vast_sim_client.create_on_first_available(offers, body())
    assert vast_sim.instance_records() == []


@pytest.mark.parametrize("status", [200, 400])
def test_it_destroys_a_new_contract_that_came_back_with_an_error(vast_sim, vast_sim_client, status):
    vast_sim.create_error_with_contract(status=status)

    with pytest.raises(ProviderError) as raised:
        vast_sim_client.create_instance(101, body())

    assert not isinstance(raised.value, OfferUnavailable)
    [record] = vast_sim.instance_records()
    assert record["destroyed"] is True
    assert vast_sim_client.show_instance(record["id"]) is None


@pytest.mark.parametrize("retry_after_header", [True, False], ids=["retry-after", "threshold-in-body"])
def test_it_backs_off_for_seconds_on_429(vast_sim, vast_sim_client, settings, retry_after_header):
    assert settings.HTTP_BACKOFF_SECONDS < 0.1  # so only the 429 handling can explain a wait of seconds
    # Real vast sends no Retry-After, only `threshold=1.2` in the body; both must be read, in seconds.
    vast_sim.rate_limit(1, seconds=1.2, retry_after_header=retry_after_header)

    started = time.monotonic()
    assert vast_sim_client.show_instance(55) is None
    elapsed = time.monotonic() - started

    assert 1.2 <= elapsed < 5
    assert vast_sim.paths() == ["GET /api/v0/instances/55/"] * 2


def test_calls_to_one_endpoint_are_spaced_across_threads(vast_sim):
    client = client_for(vast_sim.url, vast_sim.api_key, min_intervals={"show": 0.3, "list": 0.0})

    started = time.monotonic()
    threads = [threading.Thread(target=client.show_instance, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    client.list_instances()  # another endpoint: not held up by the queue of shows
    list_done = time.monotonic() - started
    for thread in threads:
        thread.join()

    assert list_done < 0.3
    assert time.monotonic() - started >= 0.6  # three shows need two full intervals


def test_default_pacing_stays_within_the_limits_vast_enforces(vast_sim):
    vast_sim.enforce_rate_limits()  # show: one call per 2.0 s, or 429
    client = VastAIClient(vast_sim.url, vast_sim.api_key)  # the production intervals

    client.show_instance(1)
    client.show_instance(2)

    assert vast_sim.paths() == ["GET /api/v0/instances/1/", "GET /api/v0/instances/2/"]  # no 429 to repeat


def test_it_pages_the_v1_list_by_label(vast_sim_factory, settings):
    offers = [make_offer(200 + n, 7000 + n, "H100 SXM", 1.5) for n in range(31)]
    sim = vast_sim_factory(offers=offers, boot_seconds=60)  # stays booting: no SwarmUI needed here
    client = client_for(sim.url, settings.VAST_API_KEY)
    ours = [client.create_instance(offer["id"], body()) for offer in offers[:27]]
    for offer in offers[27:]:
        client.create_instance(offer["id"], body(label="someone-else"))

    listed = client.list_instances(LABEL)

    assert [instance.id for instance in listed] == ours
    calls = [r for r in sim.requests if r.path == "/api/v1/instances/"]
    assert len(calls) == 2  # 25 + 2
    assert json.loads(calls[0].query["select_filters"]) == {"label": {"eq": LABEL}}
    assert calls[0].query["limit"] == "25"
    assert "after_token" not in calls[0].query and calls[1].query["after_token"]
    assert len(client.list_instances()) == 31


def test_it_never_calls_the_retired_v0_list(vast_sim, vast_sim_client, settings):
    offers = vast_sim_client.search_offers(OfferFilters())
    _, instance_id = vast_sim_client.create_on_first_available(offers, body())
    vast_sim_client.show_instance(instance_id)
    vast_sim_client.list_instances(LABEL)
    vast_sim_client.destroy_and_verify(instance_id)

    assert "GET /api/v0/instances/" not in vast_sim.paths()
    assert "GET /api/v1/instances/" in vast_sim.paths()
    # ... which is right: the retired list answers like vast does now.
    retired = requests.get(f"{vast_sim.url}/api/v0/instances/",
                           headers={"Authorization": f"Bearer {settings.VAST_API_KEY}"}, timeout=5)
    assert retired.status_code == 410 and retired.json()["error"] == "deprecated_endpoint"


def test_destroy_is_verified(vast_sim, vast_sim_client):
    first = vast_sim_client.create_instance(101, body())
    vast_sim.ignore_destroys(1)  # vast said success but the instance lives on

    vast_sim_client.destroy_and_verify(first)

    assert vast_sim.paths().count(f"DELETE /api/v0/instances/{first}/") == 2
    assert vast_sim.instance_records()[0]["destroyed"] is True

    second = vast_sim_client.create_instance(102, body())
    vast_sim.ignore_destroys(5)
    with pytest.raises(TransientError, match="still exists after 2 destroy attempts"):
        vast_sim_client.destroy_and_verify(second, attempts=2)


def test_no_such_instance_counts_as_destroyed(vast_sim, vast_sim_client):
    instance_id = vast_sim_client.create_instance(101, body())
    vast_sim_client.destroy_instance(instance_id)

    vast_sim_client.destroy_instance(instance_id)  # 404 no_such_instance
    vast_sim_client.destroy_and_verify(424242)

    assert vast_sim.paths().count(f"DELETE /api/v0/instances/{instance_id}/") == 2


def test_the_api_key_never_reaches_the_instance_env_or_errors(vast_sim_factory, caplog):
    key = "vast-SECRET-key-0123456789"
    sim = vast_sim_factory(api_key=key)
    client = client_for(sim.url, key)
    caplog.set_level(logging.DEBUG)

    create_body = body()
    assert key not in json.dumps(create_body)
    instance_id = client.create_instance(101, create_body)
    instance, _ = wait_running(client, instance_id)
    assert key not in json.dumps(sim.instance_records())
    assert sim.instance_records()[0]["env"][SWARMUI_TOKEN_ENV] == "swarm-token-1"

    sim.server_error(10)
    errors = [_raised(lambda: client.show_instance(instance_id))]
    sim.server_error(0)
    sim.vanish_offer(102)
    errors.append(_raised(lambda: client.create_instance(102, body())))
    sim.create_error_with_contract()
    errors.append(_raised(lambda: client.create_instance(103, body())))
    errors.append(_raised(lambda: client_for(sim.url, "wrong-key").list_instances()))
    errors.append(_raised(lambda: client_for(_closed_port_url(), key).show_instance(1)))

    assert [error.code for error in errors] == ["http_500", "offer_unavailable", "insufficient_bid",
                                                "unauthorized", "connection_error"]
    for error in errors:
        assert key not in str(error) and key not in repr(error.args)
    assert key not in caplog.text
    assert key not in repr(client)
    assert all(key not in json.dumps(r.query) for r in sim.requests)  # only ever in the Authorization header


def test_search_sends_the_configured_filters_and_sorts_cheapest_first(vast_sim, vast_sim_client, settings):
    settings.VAST_GPU_NAMES = ["H100 SXM", "H100 PCIE", "H200", "A100 SXM4", "A100 PCIE", "H100 NVL", "A100X"]
    settings.VAST_MIN_CUDA = "12.8"
    settings.VAST_MIN_RELIABILITY = 0.98
    settings.VAST_MIN_DISK_GB = 80
    settings.VAST_DISK_GB = 100
    settings.VAST_MIN_INET_DOWN_MBPS = 500
    settings.VAST_MAX_DPH = 3.0
    settings.VAST_VERIFIED_ONLY = True
    filters = OfferFilters.from_settings(exclude_machine_ids={9003})  # a machine that failed us before

    offers = vast_sim_client.search_offers(filters, limit=30)

    [search] = vast_sim.requests
    assert (search.method, search.path) == ("POST", "/api/v0/bundles/")
    assert search.body == {
        "gpu_name": {"in": settings.VAST_GPU_NAMES},
        "num_gpus": {"eq": 1},
        "cuda_max_good": {"gte": 12.8},
        "compute_cap": {"gte": 800},
        "rentable": {"eq": True},
        "rented": {"eq": False},
        "external": {"eq": False},
        "verified": {"eq": True},
        "reliability2": {"gte": 0.98},
        "disk_space": {"gte": 100},
        "inet_down": {"gte": 500},
        "direct_port_count": {"gte": 1},
        "dph_total": {"lte": 3.0},
        "order": [["dph_total", "asc"]],
        "type": "on-demand",
        "allocated_storage": 100,
        "limit": 30,
    }
    # Of the default offers only these pass every filter; 103 (machine 9003) is cheaper but excluded.
    assert [offer.id for offer in offers] == [102, 101, 104]
    assert [offer.dph_total for offer in offers] == sorted(offer.dph_total for offer in offers)
    assert offers[0].dph_total > 1.60  # priced with the 100 GB we will rent, not the 5 GB default


def test_a_created_instance_boots_to_running_with_its_own_swarmui_port(vast_sim_factory, settings):
    sim = vast_sim_factory(loading_seconds=0.5)
    client = client_for(sim.url, settings.VAST_API_KEY)
    first_body, second_body = body(token="token-one"), body(token="token-two")
    first = client.create_instance(101, first_body)
    second = client.create_instance(102, second_body)
    one_cert = instance_tls.from_env(first_body["env"]).certificate_pem
    two_cert = instance_tls.from_env(second_body["env"]).certificate_pem
    assert client.show_instance(first).swarmui_url is None  # no port mapped before running

    one, seen = wait_running(client, first)
    assert seen == [None, "loading", "running"]
    # The container runs, but SwarmUI is still loading its backend, started with the token from `env`.
    assert _backend_status(one.swarmui_url, "token-one", one_cert) == "loading"
    two, _ = wait_running(client, second)

    # Each instance serves TLS with the certificate genhub made for it and passed in `env`.
    assert one.swarmui_url.startswith("https://127.0.0.1:") and one.swarmui_url != two.swarmui_url
    assert _backend_status(two.swarmui_url, "token-one", two_cert) == 401
    time.sleep(0.6)
    assert _backend_status(one.swarmui_url, "token-one", one_cert) == "running"
    assert {r["id"]: r["swarmui_url"] for r in sim.instance_records()} == {first: one.swarmui_url,
                                                                          second: two.swarmui_url}

    client.destroy_and_verify(first)

    assert not _answers(one.swarmui_url, one_cert)  # destroy really stopped its SwarmUI
    assert _answers(two.swarmui_url, two_cert)


def test_an_exited_instance_says_why_it_is_dead(vast_sim, vast_sim_client):
    instance_id = vast_sim_client.create_instance(101, body())
    instance, _ = wait_running(vast_sim_client, instance_id)
    assert instance.dead_reason is None

    vast_sim.kill_instance(instance_id)

    instance = vast_sim_client.show_instance(instance_id)
    assert instance.actual_status == "exited"
    assert "exited" in instance.dead_reason
    assert instance.swarmui_url is None


@pytest.mark.parametrize("status", [500, 503])
def test_create_is_never_retried_on_a_server_error(vast_sim, vast_sim_client, status):
    vast_sim.server_error(1, status=status)

    with pytest.raises(TransientError) as raised:
        vast_sim_client.create_instance(101, body())

    assert raised.value.status == status
    assert vast_sim.paths() == ["PUT /api/v0/asks/101/"]
    assert vast_sim.instance_records() == []


def _pinned(certificate: str) -> requests.Session:
    session = requests.Session()
    session.mount("https://", GuardedAdapter(public_only=False, pinned_certificate=certificate))
    return session


def _backend_status(url: str, token: str, certificate: str):
    """SwarmUI's backend status, or the HTTP status when the token is refused."""
    headers = {"Authorization": token}
    http = _pinned(certificate)
    session = http.post(f"{url}/API/GetNewSession", json={}, headers=headers, timeout=5)
    if session.status_code != 200:
        return session.status_code
    status = http.post(f"{url}/API/GetCurrentStatus", json={"session_id": session.json()["session_id"]},
                       headers=headers, timeout=5)
    return status.json()["backend_status"]["status"]


def _answers(url: str, certificate: str) -> bool:
    try:
        _pinned(certificate).get(url, timeout=2)
    except requests.ConnectionError:
        return False
    return True


def _raised(call) -> ProviderError:
    with pytest.raises(ProviderError) as raised:
        call()
    return raised.value


def _closed_port_url() -> str:
    """A local URL where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"
