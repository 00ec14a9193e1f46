"""A simulated vast.ai cloud: the same URL shapes, status codes and bodies as the real API
(as vast.ai's docs and vast-cli show it), so client bugs show up here rather than on a paid account.

- `POST /api/v0/bundles/` searches offers with vast's query semantics (field ops, `order`, `limit` defaulting
  to 64, `allocated_storage` pricing `dph_total` and filtering `disk_space`); unknown fields are a 400. It also
  reproduces the reported quirk that `cuda_max_good` without `compute_cap` hides the GPUs (§2).
- `PUT /api/v0/asks/{id}/` rents an offer; a rented or vanished offer answers `no_such_ask` (§3).
- `GET /api/v0/instances/{id}/` answers `{"instances": {...}}`, or `{"instances": null}` once it is gone (§4).
- `GET /api/v1/instances/` pages (`limit` ≤ 25, default 5, `next_token`/`after_token`) with `select_filters`.
- `GET /api/v0/instances/` is retired: 410 `deprecated_endpoint`, as vast answers now (§4, §7).
- `DELETE /api/v0/instances/{id}/` destroys; an unknown id is 404 `no_such_instance` (§5).

Each instance boots: `actual_status` null for `boot_seconds`, "loading" for `loading_seconds`, then "running"
with its own SwarmUI simulator on a new port (TLS with the key and certificate from the create
request's env, as the image serves them; without them the container exits),
published as `ports["7801/tcp"][0]["HostPort"]` on
`public_ipaddr` 127.0.0.1. That SwarmUI reports its backend "loading" for another `loading_seconds`, then
"running". Destroying the instance stops its SwarmUI.

Machines differ in speed like real hosts with the same GPU name do: `speed_factors` (machine id → factor,
at construction or with `set_speed_factor`) multiplies the generation time of SwarmUI on that machine.

Faults: call the methods, or from another process `POST /_sim/<method>` with the keyword arguments as a JSON
object (`kill_instance`, `hang_instance`, `fail_health`, `rate_limit`, `server_error`, `vanish_offer`,
`create_error_with_contract`, `ignore_destroys`, `enforce_rate_limits`, `exhaust_search_quota`, `slow_create`,
`set_speed_factor`).
`GET /_sim/instances` and
`GET /_sim/requests` return the bookkeeping.
"""

import base64
import binascii
import json
import re
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from urllib.parse import parse_qs, urlsplit

from providers import instance_tls
from providers.simulators.server import Simulator
from providers.simulators.swarmui import SwarmUISimulator
from providers.swarmui_contract import SWARMUI_PORT, SWARMUI_TOKEN_ENV

CONTROL_METHODS = ("kill_instance", "hang_instance", "fail_health", "rate_limit", "server_error", "vanish_offer",
                   "create_error_with_contract", "ignore_destroys", "enforce_rate_limits", "exhaust_search_quota",
                   "slow_create", "set_speed_factor")

# Per-endpoint minimum seconds between calls, from vast's OpenAPI `x-rate-limit` values (§5); search instead
# allows 10 per minute.
THRESHOLDS = {"create": 4.5, "show": 2.0, "list": 1.0, "destroy": 3.0}
SEARCH_PER_MINUTE = 10

SEARCH_NON_FILTER_KEYS = {"order", "type", "limit", "allocated_storage"}
SEARCH_TYPES = {"on-demand", "ondemand", "bid", "reserved"}
SEARCH_DEFAULT_LIMIT = 64  # what vast returns when `limit` is omitted (§2)
OPS = {
    "eq": lambda a, b: a == b, "neq": lambda a, b: a != b,
    "gt": lambda a, b: a is not None and a > b, "gte": lambda a, b: a is not None and a >= b,
    "lt": lambda a, b: a is not None and a < b, "lte": lambda a, b: a is not None and a <= b,
    "in": lambda a, b: a in b, "notin": lambda a, b: a not in b,
}
# v1 list: stored columns filter; computed ones are a 400 (§4).
LIST_FILTERABLE = {"id", "label", "actual_status", "intended_status", "cur_state", "gpu_name", "verification",
                   "machine_id"}
LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT = 5, 25
# Space-separated combinations are allowed; the CLI spells the direct ones `ssh_direc`/`jupyter_direc` (§3).
RUNTYPES = {"args", "ssh", "ssh_proxy", "ssh_direct", "ssh_direc", "jupyter", "jupyter_proxy", "jupyter_direct",
            "jupyter_direc"}

ASK_PATH = re.compile(r"^/api/v0/asks/(\d+)/$")
INSTANCE_PATH = re.compile(r"^/api/v0/instances/(\d+)/$")


def make_offer(offer_id: int, machine_id: int, gpu_name: str, dph_base: float, **overrides) -> dict:
    """One search row as vast returns it (§2 "Response shape"); `overrides` set any field."""
    offer = {
        "id": offer_id, "ask_contract_id": offer_id, "bundle_id": offer_id * 10, "machine_id": machine_id,
        "host_id": machine_id + 50000, "gpu_name": gpu_name, "num_gpus": 1, "gpu_ram": 81559, "gpu_total_ram": 81559,
        # compute_cap: Ampere for the A100s, Hopper otherwise.
        "compute_cap": 800 if gpu_name.startswith("A") else 900, "cuda_max_good": 12.8, "driver_version": "570.133.07",
        "cpu_cores": 64, "cpu_cores_effective": 16.0, "cpu_ram": 257000, "disk_space": 500.0, "disk_bw": 2000.0,
        "inet_down": 2000.0, "inet_up": 1500.0, "direct_port_count": 100, "dph_base": dph_base,
        "storage_cost": 0.15, "min_bid": round(dph_base * 0.6, 3), "reliability": 0.995, "reliability2": 0.995,
        "verification": "verified", "vericode": 1, "geolocation": "Florida, US", "hosting_type": 1,
        "static_ip": True, "public_ipaddr": "127.0.0.1", "score": 300.0 - dph_base * 100, "external": False,
        "is_bid": False, "duration": 2592000.0, "end_date": time.time() + 2592000,
    }
    offer.update(overrides)
    return offer


def default_offers() -> list[dict]:
    """Four offers genhub's default filters accept, and one that fails each filter."""
    return [
        make_offer(101, 9001, "H100 SXM", 1.90),
        make_offer(102, 9002, "H100 PCIE", 1.60, cuda_max_good=12.9),
        make_offer(103, 9003, "A100 SXM4", 1.10),
        make_offer(104, 9004, "H200", 2.40, cuda_max_good=13.0, gpu_ram=143771, gpu_total_ram=143771),
        make_offer(105, 9005, "RTX 4090", 0.40, compute_cap=890, gpu_ram=24564, gpu_total_ram=24564),
        make_offer(106, 9006, "H100 SXM", 1.20, cuda_max_good=12.4),
        make_offer(107, 9007, "A100 PCIE", 0.90, reliability=0.90, reliability2=0.90),
        make_offer(108, 9008, "H100 SXM", 1.00, verification="unverified", vericode=0),
        make_offer(109, 9009, "A100 SXM4", 0.95, disk_space=50.0),
        make_offer(110, 9010, "H100 NVL", 1.40, inet_down=200.0),
        make_offer(111, 9011, "H200", 4.50),
        make_offer(112, 9012, "A100X", 1.30, direct_port_count=0),
    ]


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict  # first value of each query parameter
    body: object  # parsed JSON, or None
    authorized: bool


@dataclass
class SimInstance:
    id: int
    offer: dict
    label: str
    image: str
    env: dict
    disk: float
    runtype: str | None
    created_at: float  # monotonic
    start_date: float  # wall clock, as vast reports it
    # booting → running; or stopped (created together with an error), exited, vanished, destroyed
    state: str = "booting"
    swarmui: object = field(default=None, repr=False)
    timer: threading.Timer | None = field(default=None, repr=False)
    destroyed: bool = False
    lost_by: str = ""  # "exited" or "vanish" when `kill_instance` took the machine (its outputs with it)

    def record(self) -> dict:
        return {"id": self.id, "label": self.label, "offer_id": self.offer["id"],
                "machine_id": self.offer["machine_id"], "state": self.state, "destroyed": self.destroyed,
                "env": dict(self.env),
                "swarmui_url": self.swarmui.url if self.swarmui else None}


class VastAISimulator(Simulator):
    def __init__(self, api_key: str, *, port: int = 0, boot_seconds: float = 1.0, loading_seconds: float = 1.0,
                 offers: list | None = None, swarmui_generation_seconds: float = 0.5,
                 speed_factors: dict | None = None):
        super().__init__(port=port)
        self.api_key = api_key
        self.boot_seconds = boot_seconds
        self.loading_seconds = loading_seconds
        self.swarmui_generation_seconds = swarmui_generation_seconds
        self.speed_factors = {int(machine): float(factor) for machine, factor in (speed_factors or {}).items()}
        self.offers = {offer["id"]: dict(offer) for offer in (default_offers() if offers is None else offers)}
        self.instances: dict[int, SimInstance] = {}
        self.requests: list[RecordedRequest] = []
        self._rented: set[int] = set()  # offer ids under a live contract
        self._vanished: dict[int, int] = {}  # offer id → HTTP status its create answers with
        self._next_id = 1000001
        self._faults = Counter()
        # instance id -> (shows left or None, monotonic end or None) of an `offline` blip
        self._offline: dict[int, tuple[int | None, float | None]] = {}
        self._rate_limit_seconds = 1.0
        self._rate_limit_header = True
        self._server_error_status = 500
        self._contract_error_status = 200
        self._enforce = False
        self._last_call: dict[str, float] = {}
        self._searches: deque[float] = deque()
        self._closed = False
        self._quota_reset_at: float | None = None  # set while the daily search quota is used up
        self._slow_creates: list[dict] = []
        self._lock = threading.RLock()

    def stop(self):
        with self._lock:
            self._closed = True  # no instance may finish booting after this
            live = [inst for inst in self.instances.values() if inst.state not in ("destroyed", "vanished")]
        for inst in live:
            self._shut_down(inst)
        super().stop()

    # --- faults and bookkeeping ---------------------------------------------------------------------

    def kill_instance(self, id: int, mode: str = "exited") -> None:
        """The container dies: SwarmUI stops answering and vast reports `exited`; or ("vanish") vast loses
        the instance altogether and shows `{"instances": null}`."""
        if mode not in ("exited", "vanish"):
            raise ValueError(f"mode must be 'exited' or 'vanish', not {mode!r}")
        with self._lock:
            inst = self._instance(id)
            inst.state = "exited" if mode == "exited" else "vanished"
            inst.lost_by = mode
            if mode == "vanish":
                self._rented.discard(inst.offer["id"])  # the host re-offers the GPU it reclaimed
        self._shut_down(inst)

    def offline(self, id: int, *, seconds: float | None = None, shows: int | None = None) -> None:
        """The host loses contact with vast's servers: vast computes `actual_status: "offline"` for the
        instance (§ statuses; nothing changes on the machine, so its container and SwarmUI keep serving),
        for `seconds`, or for the next `shows` answers about it, or (neither given) until `offline(id, shows=0)`."""
        with self._lock:
            self._instance(id)
            if shows == 0:
                self._offline.pop(int(id), None)
                return
            until = time.monotonic() + seconds if seconds is not None else None
            self._offline[int(id)] = (shows, until)

    def _is_offline(self, inst: SimInstance, *, consume: bool) -> bool:
        """Whether this answer shows the instance offline (uses up one show of a counted blip)."""
        blip = self._offline.get(inst.id)
        if blip is None:
            return False
        shows, until = blip
        if until is not None and time.monotonic() >= until:
            del self._offline[inst.id]
            return False
        if shows is not None and consume:
            if shows <= 1:
                del self._offline[inst.id]
            else:
                self._offline[inst.id] = (shows - 1, until)
        return True

    def hang_instance(self, id: int) -> None:
        """SwarmUI accepts connections but never answers; vast keeps reporting `running`."""
        self._swarmui(id).hang()

    def fail_health(self, id: int, *args, **kwargs) -> None:
        """Passed through to the instance's SwarmUI simulator."""
        self._swarmui(id).fail_health(*args, **kwargs)

    def rate_limit(self, n: int = 1, *, seconds: float = 1.0, retry_after_header: bool = True) -> None:
        """The next `n` API calls answer 429. Real vast sends no Retry-After, only `threshold=` in the body (§5);
        `retry_after_header=False` reproduces exactly that."""
        with self._lock:
            self._faults["rate_limit"] = n
            self._rate_limit_seconds, self._rate_limit_header = seconds, retry_after_header

    def server_error(self, n: int = 1, *, status: int = 500) -> None:
        """The next `n` API calls answer `status` (5xx) without acting."""
        with self._lock:
            self._faults["server_error"] = n
            self._server_error_status = status

    def vanish_offer(self, offer_id: int, *, status: int = 410) -> None:
        """Someone else rents the offer: search drops it and create answers `no_such_ask` with `status`
        (vast has been seen to use 400, 404 and 410, §3)."""
        if status not in (400, 404, 410):
            raise ValueError("status must be 400, 404 or 410")
        with self._lock:
            self._vanished[int(offer_id)] = status

    def create_error_with_contract(self, *, status: int = 200) -> None:
        """The next create answers `success: false` with HTTP `status` *and* a real `new_contract`, left
        stopped and billing (§3 "Error but created anyway")."""
        with self._lock:
            self._faults["create_error_with_contract"] += 1
            self._contract_error_status = status

    def ignore_destroys(self, n: int = 1) -> None:
        """The next `n` destroys answer success but leave the instance running."""
        with self._lock:
            self._faults["ignore_destroy"] = n

    def exhaust_search_quota(self, exhausted: bool = True, *, reset_at: float | None = None) -> None:
        """Every search answers 429 `search_quota_exceeded` until called with `exhausted=False`, as vast does
        once the account's daily search quota is spent (§5 "Daily search quota"). `X-RateLimit-Reset`
        carries the reset, epoch seconds (default: the next UTC midnight)."""
        with self._lock:
            if not exhausted:
                self._quota_reset_at = None
                return
            if reset_at is None:
                now = time.time()
                reset_at = now - now % 86400 + 86400
            self._quota_reset_at = float(reset_at)

    @property
    def search_quota_exhausted(self) -> bool:
        """Whether searches answer `search_quota_exceeded` now (the quota resets at its announced time)."""
        with self._lock:
            return self._quota_reset_at is not None and time.time() < self._quota_reset_at

    @property
    def slow_creates_waiting(self) -> int:
        """Creates still to be answered late (`slow_create`)."""
        with self._lock:
            return len(self._slow_creates)

    def slow_create(self, n: int = 1, *, seconds: float = 2.0, make: str = "before", status: int = 200) -> None:
        """The next `n` creates answer only after `seconds`. `make="before"`: the instance exists at once and
        the answer is late; `"after"`: vast acts only after the delay, so the instance appears late, even when
        the client gave up waiting; `"never"`: nothing is rented (a 5xx that really failed). `status`: the late
        answer's HTTP status (a 5xx after renting)."""
        if make not in ("before", "after", "never"):
            raise ValueError("make must be 'before', 'after' or 'never'")
        with self._lock:
            self._slow_creates += [{"seconds": float(seconds), "make": make, "status": int(status)}] * int(n)

    def enforce_rate_limits(self, enabled: bool = True) -> None:
        """Answer 429 like vast when an endpoint is called sooner than its threshold (§5). Off by default."""
        with self._lock:
            self._enforce = enabled
            self._last_call.clear()
            self._searches.clear()

    def set_speed_factor(self, machine_id: int, factor: float) -> None:
        """Clips on this machine take `factor` × the usual time, from now on (running instances too)."""
        if float(factor) <= 0:
            raise ValueError("factor must be positive")
        with self._lock:
            self.speed_factors[int(machine_id)] = float(factor)
            live = [inst for inst in self.instances.values() if inst.swarmui and inst.offer["machine_id"] == int(
                machine_id)]
        for inst in live:
            inst.swarmui.speed_factor = float(factor)

    def instance_records(self) -> list[dict]:
        """Every instance ever created: id, label, offer and machine, state, whether destroyed, env, SwarmUI URL."""
        with self._lock:
            return [inst.record() for inst in self.instances.values()]

    def generation_counts(self, key: str = "seed", *, completed: bool = False) -> Counter:
        """`SwarmUISimulator.generation_counts` summed over every instance ever created, destroyed ones too
        (an instance keeps its SwarmUI's record after it stops)."""
        with self._lock:
            swarmuis = [inst.swarmui for inst in self.instances.values() if inst.swarmui is not None]
        total = Counter()
        for swarmui in swarmuis:
            total.update(swarmui.generation_counts(key, completed=completed))
        return total

    def paths(self) -> list[str]:
        with self._lock:
            return [f"{r.method} {r.path}" for r in self.requests]

    def _instance(self, instance_id) -> SimInstance:
        inst = self.instances.get(int(instance_id))
        if inst is None:
            raise KeyError(f"no instance {instance_id}")
        return inst

    def _swarmui(self, instance_id):
        with self._lock:
            inst = self._instance(instance_id)
            if inst.swarmui is None:
                raise ValueError(f"instance {instance_id} has no SwarmUI yet (state {inst.state})")
            return inst.swarmui

    # --- HTTP ----------------------------------------------------------------------------------------

    def handle(self, request):
        parts = urlsplit(request.path)
        path, query = parts.path, {key: values[0] for key, values in parse_qs(parts.query).items()}
        raw = request.read_body()  # always drained: the connection is kept alive
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if path.startswith("/_sim/"):
            return self._control(request, path[len("/_sim/"):], body or {})
        authorized = request.headers.get("Authorization") == f"Bearer {self.api_key}"
        with self._lock:
            self.requests.append(RecordedRequest(request.command, path, query, body, authorized))
        if not authorized:
            return request.send_json(401, {"success": False, "error": "auth_error", "msg": "Invalid user key"})
        if raw and body is None:
            return request.send_json(400, {"success": False, "error": "invalid_args", "msg": "Malformed JSON body"})
        route = self._route(request.command, path)
        if route is None:
            return request.send_json(404, {"success": False, "error": "not_found", "msg": f"No route {path}"})
        endpoint, handler, arg = route
        if endpoint == "search" and self._quota_reset_at is not None and time.time() >= self._quota_reset_at:
            self._quota_reset_at = None  # vast resets the quota at the time it announced, by itself
        if endpoint == "search" and self._quota_reset_at is not None:
            return request.send_json(
                429, {"success": False, "error": "search_quota_exceeded",
                      "msg": "Daily search quota exceeded. The quota resets at UTC midnight."},
                {"X-RateLimit-Reset": f"{self._quota_reset_at:.0f}"})
        if endpoint == "create" and (slow := self._take_slow_create()):
            return self._slow_create(request, body or {}, query, arg, slow)
        if self._take_fault("rate_limit"):
            headers = {"Retry-After": f"{self._rate_limit_seconds:g}"} if self._rate_limit_header else {}
            return request.send_json(
                429, {"detail": f"API requests too frequent endpoint threshold={self._rate_limit_seconds:g}"}, headers)
        if self._take_fault("server_error"):
            return request.send_json(self._server_error_status,
                                     {"success": False, "error": "server_error", "msg": "Internal Server Error"})
        limited = self._over_threshold(endpoint)
        if limited:
            return request.send_json(429, limited)
        status, payload = handler(body or {}, query, arg)
        return request.send_json(status, payload)

    def _take_slow_create(self) -> dict | None:
        with self._lock:
            return self._slow_creates.pop(0) if self._slow_creates else None

    def _slow_create(self, request, body, query, offer_id, slow: dict):
        if slow["make"] != "before":
            time.sleep(slow["seconds"])
        status, payload = (500, {}) if slow["make"] == "never" else self._create(body, query, offer_id)
        if slow["make"] == "before":
            time.sleep(slow["seconds"])
        if slow["status"] >= 500:
            status, payload = slow["status"], {"success": False, "error": "server_error",
                                               "msg": "Internal Server Error"}
        try:
            request.send_json(status, payload)
        except OSError:
            pass  # the client stopped waiting; vast rented the instance all the same

    def _route(self, method: str, path: str):
        """(endpoint name for rate limits, handler, path argument), or None."""
        if method == "POST" and path == "/api/v0/bundles/":
            return "search", self._search, None
        if method == "PUT" and (match := ASK_PATH.match(path)):
            return "create", self._create, int(match[1])
        if match := INSTANCE_PATH.match(path):
            if method == "GET":
                return "show", self._show, int(match[1])
            if method == "DELETE":
                return "destroy", self._destroy, int(match[1])
        if method == "GET" and path == "/api/v0/instances/":
            return "list_v0", self._retired_list, None
        if method == "GET" and path == "/api/v1/instances/":
            return "list", self._list, None
        return None

    def _over_threshold(self, endpoint: str) -> dict | None:
        with self._lock:
            if not self._enforce:
                return None
            now = time.monotonic()
            if endpoint == "search":
                while self._searches and now - self._searches[0] > 60:
                    self._searches.popleft()
                if len(self._searches) >= SEARCH_PER_MINUTE:
                    return {"success": False, "error": "rate_limit_exceeded", "msg": "API requests too frequent"}
                self._searches.append(now)
                return None
            threshold = THRESHOLDS.get(endpoint)
            if threshold is None:
                return None
            if now - self._last_call.get(endpoint, -1e9) < threshold:
                return {"detail": f"API requests too frequent endpoint threshold={threshold}"}
            self._last_call[endpoint] = now
            return None

    def _control(self, request, name: str, kwargs: dict):
        if request.command == "GET" and name == "instances":
            return request.send_json(200, {"instances": self.instance_records()})
        if request.command == "GET" and name == "requests":
            with self._lock:
                return request.send_json(200, {"requests": [asdict(r) for r in self.requests]})
        if request.command != "POST" or name not in CONTROL_METHODS:
            return request.send_json(404, {"error": f"unknown control {request.command} /_sim/{name}",
                                           "controls": list(CONTROL_METHODS)})
        try:
            getattr(self, name)(**kwargs)
        except (KeyError, ValueError, TypeError) as exc:
            return request.send_json(400, {"error": str(exc)})
        return request.send_json(200, {"ok": True})

    # --- search ----------------------------------------------------------------------------------------

    def _search(self, query: dict, _params, _arg):
        kind = query.get("type", "on-demand")
        if kind not in SEARCH_TYPES:
            return 400, {"success": False, "error": "invalid_args", "msg": f"Invalid type {kind!r}"}
        storage = float(query.get("allocated_storage", 5.0))
        with self._lock:
            rows = [self._offer_row(offer, storage) for offer in self.offers.values()]
        filters = {key: value for key, value in query.items() if key not in SEARCH_NON_FILTER_KEYS}
        # `allocated_storage` doubles as a `disk_space >= value` filter (§2).
        checks = [("disk_space", "gte", storage)]
        for name, ops in filters.items():
            if not isinstance(ops, dict):
                return 400, {"success": False, "error": "invalid_args", "msg": f"Filter {name} must be an object"}
            for op, value in ops.items():
                if op not in OPS:
                    return 400, {"success": False, "error": "invalid_args", "msg": f"Unknown operator {op!r}"}
                if rows and name not in rows[0]:
                    return 400, {"success": False, "error": "invalid_args", "msg": f"Unknown search field {name!r}"}
                checks.append((name, op, value))
        rows = [row for row in rows if all(OPS[op](row.get(name), value) for name, op, value in checks)]
        if "cuda_max_good" in filters and "compute_cap" not in filters:
            rows = []  # dstackai/gpuhunt#142: this combination hid every H100/H200 (§2 pitfall)
        order = query.get("order") or [["score", "desc"]]
        for name, direction in reversed(order):
            if rows and name not in rows[0]:
                return 400, {"success": False, "error": "invalid_args", "msg": f"Unknown order field {name!r}"}
            rows.sort(key=lambda row: row[name], reverse=direction == "desc")
        limit = int(query.get("limit") or SEARCH_DEFAULT_LIMIT)
        for row in rows:
            del row["verified"]  # a virtual filter column, not a response field
        return 200, {"offers": rows[:limit]}

    def _offer_row(self, offer: dict, storage: float) -> dict:
        taken = offer["id"] in self._rented or offer["id"] in self._vanished
        # `dph_total` prices storage at `allocated_storage` GB ($/GB/month → $/hour).
        dph_total = round(offer["dph_base"] + storage * offer["storage_cost"] / 720, 6)
        return {**offer, "dph_total": dph_total, "storage_total_cost": round(dph_total - offer["dph_base"], 6),
                "rentable": not taken, "rented": taken, "verified": offer["verification"] == "verified"}

    # --- create ----------------------------------------------------------------------------------------

    def _create(self, body: dict, _params, offer_id: int):
        problem = self._invalid_create(body)
        if problem:
            return 400, {"success": False, "error": "invalid_args", "msg": problem}
        with self._lock:
            offer = self.offers.get(offer_id)
            if offer is None:
                return 404, {"success": False, "error": "invalid_args",
                             "msg": f"error 404/3603: no_such_ask Instance type by id {offer_id} is not available."}
            if offer_id in self._vanished or offer_id in self._rented:
                status = self._vanished.get(offer_id, 410)
                if status == 404:
                    return 404, {"success": False, "error": "invalid_args", "msg":
                                 f"error 404/3603: no_such_ask Instance type by id {offer_id} is not available."}
                return status, {"success": False, "error": "no_such_ask", "msg":
                                f"error {status}/3907: no_such_ask Instance type {offer_id} is no longer available."}
            inst = SimInstance(
                id=self._next_id, offer=offer, label=str(body.get("label") or ""), image=body["image"],
                env=dict(body.get("env") or {}), disk=float(body.get("disk", 10)), runtype=body.get("runtype"),
                created_at=time.monotonic(), start_date=time.time())
            self._next_id += 1
            self.instances[inst.id] = inst
            self._rented.add(offer_id)
            if self._take_fault("create_error_with_contract"):
                inst.state = "stopped"
                return self._contract_error_status, {
                    "success": False, "error": "insufficient_bid", "new_contract": inst.id,
                    "msg": "Instance created but could not be started; it is stopped."}
            inst.timer = threading.Timer(self.boot_seconds + self.loading_seconds, self._finish_boot, (inst,))
            inst.timer.daemon = True
            inst.timer.start()
        return 200, {"success": True, "new_contract": inst.id, "instance_api_key": secrets.token_hex(32)}

    @staticmethod
    def _invalid_create(body: dict) -> str | None:
        """The request checks vast applies (§3 "Body fields")."""
        if not isinstance(body.get("image"), str) or not body["image"] or len(body["image"]) > 1024:
            return "error 400/3467: Invalid args: 'image' is required"
        if not isinstance(body.get("env", {}), dict):
            return "invalid env type: env must be a dict"  # skypilot PR #9486
        if any(len(str(key)) + len(str(value)) > 256 for key, value in body.get("env", {}).items()):
            return "env entry too long (max 256)"
        if not isinstance(body.get("disk", 10), (int, float)) or body.get("disk", 10) < 8:
            return "disk must be a number of GB, at least 8"
        if len(str(body.get("label") or "")) > 256:
            return "label too long (max 256)"
        if body.get("runtype") is not None and not set(str(body["runtype"]).split()) <= RUNTYPES:
            return f"invalid runtype {body['runtype']!r}"
        if body.get("args") is not None and not isinstance(body["args"], list):
            return "args must be a list of strings"
        return None

    def _finish_boot(self, inst: SimInstance):
        """The container is up: its SwarmUI starts on a port of its own, its backend still loading models."""
        with self._lock:
            if inst.state != "booting" or self._closed:
                return
            try:
                tls = instance_tls.from_env(inst.env)
            except instance_tls.TLSMaterialError:
                # The image's entrypoint refuses to serve without the key and certificate genhub made.
                inst.state = "exited"
                return
            inst.swarmui = SwarmUISimulator(
                inst.env.get(SWARMUI_TOKEN_ENV, ""), tls=tls, generation_seconds=self.swarmui_generation_seconds,
                speed_factor=self.speed_factors.get(inst.offer["machine_id"], 1.0))
            # vast says "running" as soon as the container runs; SwarmUI needs a while longer to load its
            # backend, and genhub must wait for that too.
            inst.swarmui.backend_status = "loading"
            inst.swarmui.start()
            inst.state = "running"
            inst.timer = threading.Timer(self.loading_seconds, self._backend_ready, (inst,))
            inst.timer.daemon = True
            inst.timer.start()

    def _backend_ready(self, inst: SimInstance):
        with self._lock:
            if inst.state == "running":
                inst.swarmui.backend_status = "running"

    # --- show / list / destroy ---------------------------------------------------------------------------

    def _row(self, inst: SimInstance, *, shown: bool = False) -> dict:
        """One instance as vast shows it (§4 "Fields")."""
        elapsed = time.monotonic() - inst.created_at
        running = inst.state == "running"
        if inst.state == "booting":
            actual = "loading" if elapsed >= self.boot_seconds else None
            message = f"Pulling image {inst.image}" if actual else None
        elif inst.state == "stopped":
            actual, message = None, "Instance is stopped: it could not be scheduled."
        elif inst.state == "exited":
            actual, message = "exited", "Container exited unexpectedly (exit code 137)"
        elif self._is_offline(inst, consume=shown):
            # Computed by vast from the host's missed heartbeats; the last message stays as it was.
            actual, message = "offline", f"success, running {inst.image}/{inst.runtype or 'ssh'}"
        else:
            actual, message = "running", f"success, running {inst.image}/{inst.runtype or 'ssh'}"
        target = "stopped" if inst.state == "stopped" else "running"
        host_port = inst.swarmui.port if running else -1
        storage = inst.offer["storage_cost"] * inst.disk / 720
        row = {
            "id": inst.id, "machine_id": inst.offer["machine_id"], "host_id": inst.offer["host_id"],
            "label": inst.label or None, "actual_status": actual, "intended_status": target, "cur_state": target,
            "next_state": target, "status_msg": message, "image_uuid": inst.image, "image_runtype": inst.runtype,
            "image_args": [], "public_ipaddr": "127.0.0.1", "local_ipaddrs": "10.0.0.5 172.17.0.2\n",
            "direct_port_start": host_port, "direct_port_end": host_port,
            "direct_port_count": inst.offer["direct_port_count"], "ssh_host": "ssh1.vast.sim", "ssh_port": 10882,
            "start_date": inst.start_date, "end_date": inst.offer["end_date"], "uptime_mins": None,
            "dph_base": inst.offer["dph_base"], "dph_total": round(inst.offer["dph_base"] + storage, 6),
            "storage_cost": inst.offer["storage_cost"], "is_bid": False, "min_bid": inst.offer["min_bid"],
            "gpu_name": inst.offer["gpu_name"], "num_gpus": inst.offer["num_gpus"], "gpu_util": 0.0,
            "disk_space": inst.disk, "reliability2": inst.offer["reliability2"],
            "verification": inst.offer["verification"], "geolocation": inst.offer["geolocation"],
            "static_ip": inst.offer["static_ip"], "extra_env": [[key, value] for key, value in inst.env.items()],
            "template_hash_id": None,
        }
        if running:  # "Only present on running instances"; HostPort is a string (§4)
            row["ports"] = {f"{SWARMUI_PORT}/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(host_port)}]}
        return row

    def _live(self, instance_id: int) -> SimInstance | None:
        inst = self.instances.get(instance_id)
        return inst if inst and inst.state not in ("destroyed", "vanished") else None

    def _show(self, _body, _params, instance_id: int):
        with self._lock:
            inst = self._live(instance_id)
            return 200, {"instances": self._row(inst, shown=True) if inst else None}

    @staticmethod
    def _retired_list(_body, _params, _arg):
        return 410, {"success": False, "error": "deprecated_endpoint",
                     "msg": "/api/v0/instances/ is deprecated. Use /api/v1/instances/ instead."}

    def _list(self, _body, params: dict, _arg):
        try:
            filters = json.loads(params.get("select_filters") or "{}")
            order = json.loads(params.get("order_by") or "[]")
            columns = json.loads(params.get("select_cols") or '["*"]')
            limit = int(params.get("limit") or 0)
        except ValueError as exc:
            return 400, {"success": False, "error": "invalid_args", "msg": f"Bad query parameter: {exc}"}
        limit = LIST_DEFAULT_LIMIT if limit <= 0 else min(limit, LIST_MAX_LIMIT)
        order = [(o["col"], o.get("dir") == "desc") for o in order] + [("id", False)]  # id is always the tiebreaker
        for name in list(filters) + [col for col, _ in order]:
            if name not in LIST_FILTERABLE:
                return 400, {"success": False, "error": "invalid_args", "msg": f"Column {name!r} is not filterable"}
        with self._lock:
            rows = [self._row(inst) for inst in self.instances.values() if self._live(inst.id)]
        for name, ops in filters.items():
            for op, value in ops.items():
                if op not in OPS:
                    return 400, {"success": False, "error": "invalid_args", "msg": f"Unknown operator {op!r}"}
                rows = [row for row in rows if OPS[op](row.get(name), value)]
        label_counts = Counter(row["label"] or "" for row in rows)
        total = len(rows)

        def key(row):
            return [_Ordered(row.get(col), desc) for col, desc in order]

        rows.sort(key=key)
        if params.get("after_token"):
            try:
                after = [_Ordered(value, desc) for value, (_, desc) in
                         zip(json.loads(base64.urlsafe_b64decode(params["after_token"])), order, strict=True)]
            except (ValueError, TypeError, binascii.Error):
                return 400, {"success": False, "error": "invalid_args", "msg": "Invalid after_token"}
            rows = [row for row in rows if after < key(row)]  # keyset: rows destroyed meanwhile shift nothing
        page = rows[:limit]
        next_token = None
        if len(rows) > limit:
            last = [page[-1].get(col) for col, _ in order]
            next_token = base64.urlsafe_b64encode(json.dumps(last).encode()).decode()
        if columns != ["*"]:
            page = [{col: row.get(col) for col in columns} for row in page]
        return 200, {"success": True, "instances_found": len(page), "total_instances": total,
                     "label_counts": dict(label_counts), "next_token": next_token, "instances": page}

    def _destroy(self, _body, _params, instance_id: int):
        with self._lock:
            inst = self._live(instance_id)
            if inst is None:
                return 404, {"success": False, "error": "no_such_instance",
                             "msg": f"Instance {instance_id} not found."}
            if self._take_fault("ignore_destroy"):
                return 200, {"success": True}
            inst.state, inst.destroyed = "destroyed", True
            self._rented.discard(inst.offer["id"])
        self._shut_down(inst)
        return 200, {"success": True}

    @staticmethod
    def _shut_down(inst: SimInstance):
        if inst.timer:
            inst.timer.cancel()
        if inst.swarmui:
            inst.swarmui.stop()


class _Ordered:
    """A sort key part that orders None first and can be reversed per column (v1 `order_by` with `dir`)."""

    def __init__(self, value, desc: bool):
        self.value, self.desc = value, desc

    def _tuple(self):
        return (self.value is not None, self.value)

    def __eq__(self, other):
        return self._tuple() == other._tuple()

    def __lt__(self, other):
        return other._tuple() < self._tuple() if self.desc else self._tuple() < other._tuple()
