"""A thin client for the vast.ai REST API: search offers, create, show, list and destroy instances.

Every quirk handled here comes from vast.ai's API docs or the vast-ai/vast-cli source (§ numbers name the topics).
All HTTP goes through `providers.http.HttpClient`. The API key travels only in the `Authorization`
header (§1), never in a URL, a log line, an error message or the instance's environment.
"""

import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from django.conf import settings

from providers import instance_tls
from providers.errors import PermanentError, ProviderError, TransientError
from providers.http import HttpClient
from providers.swarmui_contract import SWARMUI_PORT, SWARMUI_TOKEN_ENV, VAST_RUNTYPE

log = logging.getLogger(__name__)

# Exact vast spellings (spaces, not underscores; §2 "GPU name spelling"): the GPUs that run Wan 2.2 A14B well.
DEFAULT_GPU_NAMES = ("H100 SXM", "H100 PCIE", "H100 NVL", "H200", "H200 NVL", "A100 SXM4", "A100 PCIE", "A100X")

# Minimum seconds between two calls to one endpoint. vast enforces per-endpoint minimum intervals (create 4.5,
# show 2.0, list 1.0, destroy 3.0) and 10 searches a minute (§5 "Rate limiting"); we stay ~10% above them
# because we space departures while vast measures arrivals.
DEFAULT_MIN_INTERVALS = {"search": 6.5, "create": 5.0, "show": 2.2, "list": 1.2, "destroy": 3.3}

# §4 actual_status values after which the container never serves again. Not `unknown` (no recent heartbeat),
# which can be transient at runtime: callers give it, like the pending states, their own deadline.
DEAD_STATUSES = frozenset({"exited", "stopped", "frozen"})
# Statuses that do not prove a running instance dead: `offline` is computed by vast when the host misses
# its heartbeats to vast's servers (often brief; the container may serve throughout), `unknown` is a missed
# host heartbeat, and `created`/`loading` after ready are transient. They count as failed probes under
# the health hysteresis instead (while booting, `offline` still fails at once).
DOUBTFUL_STATUSES = frozenset({"offline", "unknown", "created", "loading"})
# Tokens vast's own CLI self-test treats as a failed container in `status_msg` (§6, "Vast's own reference loop").
STATUS_MSG_ERROR_TOKENS = ("error", "failed", "failure", "exception", "traceback", "oci runtime", "permission denied")

V1_PAGE_SIZE = 25  # §4: the v1 list returns at most 25 per page (and only 5 when `limit` is omitted)
_THRESHOLD = re.compile(r"threshold=([0-9]+(?:\.[0-9]+)?)")


class OfferUnavailable(TransientError):
    """The offer was rented by someone else or withdrawn between search and create: try the next one."""

    def __init__(self, message: str, **kwargs):
        super().__init__(message, code="offer_unavailable", **kwargs)


@dataclass(frozen=True)
class OfferFilters:
    gpu_names: tuple[str, ...] = DEFAULT_GPU_NAMES
    min_cuda: float = 12.8
    # §2 pitfall: `cuda_max_good` without `compute_cap` hid every H100/H200; always send both. 800 = Ampere (A100).
    min_compute_cap: int = 800
    min_reliability: float = 0.98
    verified_only: bool = True
    min_disk_gb: float = 100
    disk_gb: float = 100  # what the create request asks for; vast prices `dph_total` with it
    min_inet_down_mbps: float = 500
    max_dph: float = 3.0
    num_gpus: int = 1
    min_direct_ports: int = 1  # one per mapped port; genhub maps only 7801
    exclude_machine_ids: frozenset = frozenset()

    @classmethod
    def from_settings(cls, *, exclude_machine_ids=()) -> "OfferFilters":
        return cls(
            gpu_names=tuple(getattr(settings, "VAST_GPU_NAMES", DEFAULT_GPU_NAMES)),
            min_cuda=float(getattr(settings, "VAST_MIN_CUDA", "12.8")),
            min_reliability=float(getattr(settings, "VAST_MIN_RELIABILITY", 0.98)),
            min_disk_gb=float(getattr(settings, "VAST_MIN_DISK_GB", 100)),
            disk_gb=float(getattr(settings, "VAST_DISK_GB", 100)),
            min_inet_down_mbps=float(getattr(settings, "VAST_MIN_INET_DOWN_MBPS", 500)),
            max_dph=float(getattr(settings, "VAST_MAX_DPH", 3.0)),
            verified_only=bool(getattr(settings, "VAST_VERIFIED_ONLY", True)),
            exclude_machine_ids=frozenset(exclude_machine_ids),
        )

    def query(self, limit: int) -> dict:
        """The body of `POST /api/v0/bundles/`: the filter object itself, no `q` wrapper (§2)."""
        query = {
            "gpu_name": {"in": list(self.gpu_names)},
            "num_gpus": {"eq": self.num_gpus},
            "cuda_max_good": {"gte": self.min_cuda},
            "compute_cap": {"gte": self.min_compute_cap},
            "rentable": {"eq": True},
            "rented": {"eq": False},
            "external": {"eq": False},
            "reliability2": {"gte": self.min_reliability},
            "disk_space": {"gte": max(self.min_disk_gb, self.disk_gb)},
            "inet_down": {"gte": self.min_inet_down_mbps},
            "direct_port_count": {"gte": self.min_direct_ports},
            "dph_total": {"lte": self.max_dph},
            "order": [["dph_total", "asc"]],
            "type": "on-demand",
            # Prices `dph_total` with the disk we will really ask for (the default is 5 GB).
            "allocated_storage": self.disk_gb,
            # Without `limit` only the first 64 offers come back (§2).
            "limit": limit,
        }
        if self.verified_only:
            query["verified"] = {"eq": True}
        return query


@dataclass(frozen=True)
class Offer:
    id: int  # the ask id to rent: `PUT /api/v0/asks/{id}/`
    machine_id: int
    gpu_name: str
    num_gpus: int
    dph_total: float
    cuda_max_good: float
    reliability: float
    compute_cap: int | None = None
    gpu_ram_mb: int | None = None
    disk_space: float | None = None
    inet_down: float | None = None
    direct_port_count: int | None = None
    verification: str | None = None
    geolocation: str | None = None

    @classmethod
    def from_api(cls, row: dict) -> "Offer":
        row = _strip_strings(row)
        return cls(
            id=int(row["id"]),
            machine_id=int(row["machine_id"]),
            gpu_name=row["gpu_name"],
            num_gpus=int(row["num_gpus"]),
            dph_total=float(row["dph_total"]),
            cuda_max_good=float(row["cuda_max_good"]),
            reliability=float(row.get("reliability2", row.get("reliability")) or 0.0),
            compute_cap=row.get("compute_cap"),
            gpu_ram_mb=row.get("gpu_ram"),
            disk_space=row.get("disk_space"),
            inet_down=row.get("inet_down"),
            direct_port_count=row.get("direct_port_count"),
            verification=row.get("verification"),
            geolocation=row.get("geolocation"),
        )


@dataclass(frozen=True)
class Instance:
    id: int
    actual_status: str | None
    cur_state: str | None
    intended_status: str | None
    next_state: str | None
    status_msg: str | None
    label: str | None
    machine_id: int | None
    gpu_name: str | None
    dph_total: float | None
    public_ipaddr: str | None
    ports: dict = field(default_factory=dict)
    start_date: float | None = None  # epoch seconds
    # The per-instance SwarmUI token vast echoes back in `extra_env` (§4): how an unanswered create's
    # instance is recognised. A secret: never in repr, logs or messages.
    swarmui_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_api(cls, row: dict) -> "Instance":
        # §4: string fields can carry stray whitespace or newlines (notably `public_ipaddr`).
        row = _strip_strings(row)
        return cls(
            id=int(row["id"]),
            actual_status=row.get("actual_status"),
            cur_state=row.get("cur_state"),
            intended_status=row.get("intended_status"),
            next_state=row.get("next_state"),
            status_msg=row.get("status_msg"),
            label=row.get("label"),
            machine_id=row.get("machine_id"),
            gpu_name=row.get("gpu_name"),
            dph_total=row.get("dph_total"),
            public_ipaddr=row.get("public_ipaddr"),
            ports=row.get("ports") or {},  # only present on running instances
            start_date=row.get("start_date"),
            swarmui_token=_env_value(row.get("extra_env"), SWARMUI_TOKEN_ENV),
        )

    @property
    def swarmui_url(self) -> str | None:
        """Where container port 7801 is reachable: `public_ipaddr` + the host port docker mapped it to (§4).

        None until the instance is running with the port mapped. The host port is random and changes with every
        instance, so this must be re-read rather than remembered across restarts.
        """
        mapping = self.ports.get(f"{SWARMUI_PORT}/tcp") or []
        if self.actual_status != "running" or not mapping or not self.public_ipaddr:
            return None
        # https: the image's TLS terminator owns the port, with the certificate genhub pinned for it.
        return f"https://{self.public_ipaddr}:{int(mapping[0]['HostPort'])}"

    @property
    def doubt_reason(self) -> str | None:
        """Why vast's view of a running instance is in doubt (a failed probe, not death), or None."""
        if self.actual_status is None or self.actual_status in DOUBTFUL_STATUSES:
            return f"vast reports actual_status={self.actual_status or 'none'}"
        return None

    @property
    def dead_reason(self) -> str | None:
        """Why vast says this instance will never serve (§4, §9.5), or None while it may still come up or runs."""
        if self.actual_status in DEAD_STATUSES:
            detail = f": {self.status_msg}" if self.status_msg else ""
            return f"vast reports actual_status={self.actual_status}{detail}"
        # An outbid or unschedulable contract sits stopped on every axis (dstack `update_provisioning_data`).
        if self.cur_state == self.intended_status == self.next_state == "stopped":
            return "vast stopped the contract (unschedulable or outbid)"
        message = (self.status_msg or "").lower()
        if self.actual_status != "running" and any(token in message for token in STATUS_MSG_ERROR_TOKENS):
            return f"container failed to start: {self.status_msg}"
        return None


def build_create_request(*, image: str, label: str, disk_gb: int, swarmui_token: str,
                         tls: instance_tls.InstanceTLS) -> dict:
    """The body of `PUT /api/v0/asks/{offer_id}/` for a SwarmUI instance (§3).

    Only the per-instance secrets go into the container: the SwarmUI token and the TLS key and
    certificate genhub made for it (split over entries of at most 256 characters, §3 `env`); the
    vast.ai API key never does.
    """
    return {
        "client_id": "me",
        "image": image,
        "disk": disk_gb,
        "label": label,
        # `env` must be a JSON object; docker options ride in it as keys with the value "1" (§3).
        "env": {f"-p {SWARMUI_PORT}:{SWARMUI_PORT}": "1", SWARMUI_TOKEN_ENV: swarmui_token,
                **instance_tls.env_entries(tls)},
        # `args` keeps the image's ENTRYPOINT and CMD; no `args` list means "run the image's CMD", and no
        # `onstart`, which in this runtype would replace the ENTRYPOINT (§3).
        "runtype": VAST_RUNTYPE,
        # The CLI sends false by default, which creates a stopped (storage-billing) instance when the machine
        # cannot start it; true makes that an immediate `no_such_ask` error instead (§3).
        "cancel_unavail": True,
    }


class CreateOutcomeUnknown(TransientError):
    """A create was sent but its answer never came, or said nothing (read timeout, reset after sending, 5xx):
    vast may have rented the instance. Never create again before looking for it (§3, §9.4)."""

    def __init__(self, message: str, *, offer_id: int, **kwargs):
        super().__init__(message, code="create_outcome_unknown", transport=True, **kwargs)
        self.offer_id = offer_id


class SearchQuotaExceeded(ProviderError):
    """vast's daily offer-search quota is used up (§5 "Daily search quota"): a 429 that must not be repeated,
    since the quota resets only at `resets_at` (UTC midnight) and every repeat burns requests."""

    def __init__(self, message: str, *, resets_at: datetime, **kwargs):
        # permanent for the HTTP seam (never retried); the orchestrator stops searching until `resets_at`.
        super().__init__(message, code="search_quota_exceeded", permanent=True, status=429, **kwargs)
        self.resets_at = resets_at


# A reset vast dates up to this far in our past has just happened by its clock (clocks differ by seconds):
# search again after QUOTA_JUST_RESET_RETRY rather than wait for midnight.
QUOTA_CLOCK_SKEW = timedelta(minutes=5)
QUOTA_JUST_RESET_RETRY = timedelta(minutes=1)


def quota_reset_time(header: str | None, *, now: datetime | None = None) -> datetime:
    """When the search quota resets: `X-RateLimit-Reset` if it reads as a time (epoch seconds, seconds from
    now, or an HTTP date) within the next day, else the next UTC midnight, where vast says it resets. A
    reset dated a few minutes ago at most is a difference of clocks: a minute from now."""
    now = now or datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    value = (header or "").strip()
    reset = None
    try:
        number = float(value)
        reset = datetime.fromtimestamp(number, UTC) if number > 1e9 else now + timedelta(seconds=number)
    except ValueError:
        try:
            reset = parsedate_to_datetime(value) if value else None
        except (TypeError, ValueError):
            reset = None
    if reset is not None and reset.tzinfo is not None and now - QUOTA_CLOCK_SKEW <= reset <= now:
        return now + QUOTA_JUST_RESET_RETRY
    if reset is None or reset.tzinfo is None or not now < reset <= now + timedelta(days=1, hours=1):
        return midnight
    return reset


class VastHttpClient(HttpClient):
    """Reads vast's own rate-limit and auth signals, which standard HTTP semantics miss (§1, §5)."""

    def classify(self, response, method: str, url: str) -> ProviderError:
        error = super().classify(response, method, url)
        if response.status_code == 429 and _json_or_empty(response).get("error") == "search_quota_exceeded":
            resets_at = quota_reset_time(response.headers.get("X-RateLimit-Reset"))
            return SearchQuotaExceeded(f"vast.ai: the daily offer-search quota is used up; it resets at "
                                       f"{resets_at:%Y-%m-%d %H:%M} UTC", resets_at=resets_at)
        if response.status_code == 429 and "Retry-After" not in response.headers:
            # vast sends no Retry-After; its body says `... threshold=4.5`, the minimum interval in seconds.
            match = _THRESHOLD.search(response.text or "")
            if match:
                error.retry_after = max(float(match.group(1)), 1.0)
        elif response.status_code == 404 and _json_or_empty(response).get("error") == "auth_error":
            # A wrong or revoked key has been seen to come back as 404 (§1 "Bad key responses").
            return PermanentError(error.message, code="unauthorized", status=404)
        return error


class _Pacer:
    """Keeps a minimum interval between calls to each endpoint, across all threads using one client.

    Each caller reserves the next free slot under the lock and sleeps outside it, so concurrent callers
    queue up instead of bursting into vast's per-endpoint limit (§5).
    """

    def __init__(self, intervals: dict):
        self._intervals = intervals
        self._next_slot: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, endpoint: str):
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot.get(endpoint, now))
            self._next_slot[endpoint] = slot + self._intervals.get(endpoint, 0.0)
        if slot > now:
            time.sleep(slot - now)


class VastAIClient:
    def __init__(self, api_url: str, api_key: str, *, http: HttpClient | None = None,
                 min_intervals: dict | None = None):
        self.api_url = api_url.rstrip("/")
        self.http = http or VastHttpClient("vast.ai", headers={"Authorization": f"Bearer {api_key}"})
        self._pacer = _Pacer({**DEFAULT_MIN_INTERVALS, **(min_intervals or {})})

    def __repr__(self):
        return f"<VastAIClient {self.api_url}>"  # never the key

    def _call(self, endpoint: str, method: str, path: str, **kwargs):
        self._pacer.wait(endpoint)
        return self.http.request(method, self.api_url + path, **kwargs)

    # --- offers ---

    def search_offers(self, filters: OfferFilters, *, limit: int = 20) -> list[Offer]:
        """Rentable offers matching `filters`, cheapest first, without machines genhub has excluded."""
        response = self._call("search", "POST", "/api/v0/bundles/", json=filters.query(limit))
        # The CLI rejects any search answer that is not JSON (§2 "Response shape").
        if "application/json" not in response.headers.get("Content-Type", ""):
            raise TransientError(f"vast.ai: search returned {response.headers.get('Content-Type')!r}, not JSON",
                                 code="bad_response")
        offers = [Offer.from_api(row) for row in _json_or_raise(response).get("offers") or []]
        # Excluded locally (§9.3); the sort repeats the server's order so cheapest-first holds whatever it did.
        offers = [offer for offer in offers if offer.machine_id not in filters.exclude_machine_ids]
        return sorted(offers, key=lambda offer: offer.dph_total)

    # --- create ---

    def create_instance(self, offer_id: int, body: dict) -> int:
        """Rent `offer_id`; returns the new instance id (`new_contract`).

        Raises OfferUnavailable when the offer is gone (try the next one). Any other error may leave the
        outcome unknown (a timeout or 5xx after vast received the request): the caller must then look the
        label up with `list_instances` instead of creating again, because a repeat could rent twice (§3, §9.4).
        """
        path = f"/api/v0/asks/{int(offer_id)}/"
        # idempotent=False: only a refused connection or a 429 (vast did not act) is repeated, never a 5xx
        # or a timeout. Every other status comes back here, because its body decides what happened. A create
        # can take long on vast's side: wait as long as vast's own client does (120 s) before calling it lost.
        try:
            response = self._call("create", "PUT", path, json=body, idempotent=False,
                                  ok_statuses=_ERRORS_EXCEPT_429,
                                  read_timeout=getattr(settings, "VAST_CREATE_TIMEOUT_SECONDS", 120))
        except ProviderError as exc:
            if exc.transport and getattr(exc, "reached_remote", False):
                raise CreateOutcomeUnknown(f"vast.ai: create on offer {offer_id} sent but not answered "
                                           f"({exc.message})", offer_id=offer_id) from exc
            raise
        data = _json_or_empty(response)
        contract = data.get("new_contract")
        ok = 200 <= response.status_code < 300 and data.get("success") is not False and not data.get("error")
        if ok and contract:
            return int(contract)
        if contract:
            # "Error but created anyway": vast can return an error together with a real, billing contract (§3).
            self._destroy_unwanted(int(contract), offer_id)
        if _is_offer_unavailable(data):
            raise OfferUnavailable(f"vast.ai: offer {offer_id} is no longer available: {_error_text(data)}",
                                   status=response.status_code)
        if 200 <= response.status_code < 300 and data.get("success") is not False and not data.get("error"):
            raise CreateOutcomeUnknown(f"vast.ai: create on offer {offer_id} answered success without a contract",
                                       offer_id=offer_id)
        if 200 <= response.status_code < 300:
            raise TransientError(f"vast.ai: create on offer {offer_id} failed: {_error_text(data)}",
                                 code=data.get("error") or "create_failed", status=response.status_code)
        if response.status_code >= 500:
            # A 5xx after vast received the body says nothing about whether it rented (§9.4).
            raise CreateOutcomeUnknown(f"vast.ai: create on offer {offer_id} answered HTTP {response.status_code}: "
                                       f"{_error_text(data)}", offer_id=offer_id, status=response.status_code)
        raise self.http.classify(response, "PUT", self.api_url + path)

    def _destroy_unwanted(self, instance_id: int, offer_id: int):
        log.warning("vast.ai: create on offer %s failed but returned contract %s; destroying it", offer_id, instance_id)
        try:
            self.destroy_and_verify(instance_id)
        except ProviderError as exc:
            # The leak sweep finds it by label later; say loudly that it may be billing meanwhile.
            log.error("vast.ai: could not destroy unwanted contract %s: %s", instance_id, exc)

    def create_on_first_available(self, offers: list[Offer], body: dict, *, gone=None) -> tuple[Offer, int]:
        """Rent the first offer that is still there, in the given (cheapest-first) order; `gone(offer)` hears
        of each one that was not. A create whose outcome is unknown stops here (CreateOutcomeUnknown): trying
        the next offer could rent a second instance."""
        for offer in offers:
            try:
                return offer, self.create_instance(offer.id, body)
            except OfferUnavailable as exc:
                log.info("%s; trying the next offer", exc)
                if gone:
                    gone(offer)
        raise TransientError(f"vast.ai: none of the {len(offers)} offers could be rented", code="no_offer_available")

    # --- show / list ---

    def show_instance(self, instance_id: int) -> Instance | None:
        """The instance, or None when vast no longer knows it.

        Right after a create, vast can briefly answer None for the new id (§5): callers should not conclude
        "gone" from a single None within the first seconds.
        """
        data = _json_or_raise(self._call("show", "GET", f"/api/v0/instances/{int(instance_id)}/"))
        if "instances" not in data:
            raise TransientError(f"vast.ai: show instance {instance_id} answered without 'instances'",
                                 code="bad_response")
        # The key is plural but holds one object; null means destroyed or never existed (§4).
        row = data["instances"]
        return Instance.from_api(row) if row else None

    def list_instances(self, label: str | None = None) -> list[Instance]:
        """All instances on the account (with `label`, only those), from the paged v1 list.

        Never the retired `GET /api/v0/instances/`: it answers 410, or a 200 that reads as "no instances" (§4, §7).
        """
        params = {"order_by": json.dumps([{"col": "id", "dir": "asc"}]), "limit": V1_PAGE_SIZE}
        if label is not None:
            params["select_filters"] = json.dumps({"label": {"eq": label}})
        instances, seen_tokens = [], set()
        while True:
            data = _json_or_raise(self._call("list", "GET", "/api/v1/instances/", params=params))
            # An empty list from a failed call must never "prove" nothing is running (§7.1).
            if data.get("success") is not True or not isinstance(data.get("instances"), list):
                raise TransientError(f"vast.ai: instance list failed: {_error_text(data)}", code="bad_response")
            instances += [Instance.from_api(row) for row in data["instances"]]
            token = data.get("next_token")
            if not token:
                break
            if token in seen_tokens:
                raise TransientError("vast.ai: instance list repeated a page cursor", code="bad_response")
            seen_tokens.add(token)
            params["after_token"] = token
        # Ownership is the label: re-check it here so a filter the server ignored can never hand genhub
        # someone else's instance to destroy.
        return [inst for inst in instances if label is None or inst.label == label]

    # --- destroy ---

    def destroy_instance(self, instance_id: int) -> None:
        """Ask vast to destroy the instance. An instance vast no longer knows counts as destroyed (§5)."""
        path = f"/api/v0/instances/{int(instance_id)}/"
        response = self._call("destroy", "DELETE", path, json={}, ok_statuses=(404,))
        data = _json_or_empty(response)
        if data.get("error") in ("no_such_instance", "not_found"):
            return
        if response.status_code == 404:
            raise self.http.classify(response, "DELETE", self.api_url + path)
        if data.get("success") is False:
            raise TransientError(f"vast.ai: destroy {instance_id} failed: {_error_text(data)}",
                                 code=data.get("error") or "destroy_failed", status=response.status_code)

    def destroy_and_verify(self, instance_id: int, *, attempts: int = 3) -> None:
        """Destroy, then confirm vast no longer has it; repeat up to `attempts` times, else raise."""
        for _ in range(attempts):
            self.destroy_instance(instance_id)
            instance = self.show_instance(instance_id)
            # `unloaded` is the contract state of a released instance (§4).
            if instance is None or instance.cur_state == "unloaded":
                return
        raise TransientError(f"vast.ai: instance {instance_id} still exists after {attempts} destroy attempts",
                             code="destroy_unverified")


# Statuses create_instance reads itself; a 429 stays with HttpClient so it waits and repeats it.
_ERRORS_EXCEPT_429 = tuple(status for status in range(400, 600) if status != 429)


def _is_offer_unavailable(data: dict) -> bool:
    """A vanished offer, told by the body: vast has answered it with 400, 404 and 410 (§3)."""
    if data.get("error") == "no_such_ask":
        return True
    message = str(data.get("msg") or "").lower()
    return "no_such_ask" in message or ("offer" in message and any(
        phrase in message for phrase in ("unavailable", "no longer rentable", "already been rented", "already rented")))


def _error_text(data: dict) -> str:
    parts = [data.get("error"), data.get("msg") or data.get("message") or data.get("detail")]
    return ": ".join(str(part) for part in parts if part) or "no error detail"


def _json_or_empty(response) -> dict:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _json_or_raise(response) -> dict:
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise TransientError(f"vast.ai: {response.request.method} {response.url.split('?')[0]} "
                             f"returned a body that is not a JSON object", code="bad_response")
    return data


def _env_value(extra_env, name: str) -> str | None:
    """One variable from `extra_env`, which vast shows as `[[key, value], ...]` (the CLI turns it into a dict)."""
    if isinstance(extra_env, dict):
        return extra_env.get(name)
    for pair in extra_env or ():
        if isinstance(pair, (list, tuple)) and len(pair) == 2 and pair[0] == name:
            return pair[1]
    return None


def _strip_strings(row: dict) -> dict:
    return {key: value.strip() if isinstance(value, str) else value for key, value in row.items()}
