"""A simulated SwarmUI server: one per simulated GPU instance.

It speaks SwarmUI's API (mcmonkeyprojects/SwarmUI, src/WebAPI) closely enough to catch client bugs: the exact
`Authorization` header on every route (plain-text 401 otherwise, §2.3), sessions that expire (HTTP 401
`invalid_session_id`), route errors as HTTP 200 `{"error": ...}`, framework errors as HTTP 400 with
`error_id` (§2.2), generation over HTTP and over a WebSocket on the same port (RFC 6455 handshake and
framing done here, in the http.server handler) with `gen_progress` messages and the flat `image`
message (§3.3), and real MP4 outputs under `View/local/raw/<date>/<name with spaces>.mp4`, served only
when requested percent-encoded (§3.2). Like a GPU it runs one generation at a time.

Like a genhub instance it serves only TLS, with the key and certificate genhub made for the
instance (the simulated vast.ai passes those from the create request's env); without them it makes
its own, and `certificate` is the PEM a client must pin.

Faults are injected from tests and from the simulated vast.ai through thread-safe methods:
`kill()`, `hang()`, `fail_health()`, `expire_sessions()`, `fail_next_generation()`, `refuse_websockets()`,
`wedge()`.

`InterruptAll` and `RestartBackends` act as in `src/WebAPI/BasicAPIFeatures.cs` / `BackendAPI.cs`: an
interrupt ends the generations of the calling session (of every session with `other_sessions: true`, all
sessions here being the one `local` user), running or still waiting, with a WS `error`; a restart takes
the backend through `loading` back to `running` and ends every generation in flight.
"""

import base64
import binascii
import hashlib
import io
import json
import math
import queue
import secrets
import socket
import struct
import threading
import time
import uuid
import weakref
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote, urlsplit

from PIL import Image

from providers import instance_tls
from providers.simulators.media import make_video
from providers.simulators.server import Simulator, SimulatorHandler
from providers.swarmui_contract import LIGHTX2V_LORA, VIDEO_MODEL

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
OP_CONTINUATION, OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x8, 0x9, 0xA
# `Utilities.FilePathForbidden` (§3.2), plus `/`, which would nest folders.
FORBIDDEN_PATH_CHARS = set('<>:"\\|?*~&@;#$^/')
STATUS_ROUTES = {"getcurrentstatus", "listbackends", "listmodels"}
INTERRUPTED = "Generation session interrupted."
BACKEND_RESTARTED = "Backend was restarted while generating; please try again."
VIDEO_FORMATS = {"webp", "gif", "gif-hd", "webm", "h264-mp4", "h265-mp4", "prores"}
# id -> (display name, min, max). Bounds are the simulator's, not read from SwarmUI.
INT_PARAMS = {
    "images": ("Images", 1, 1), "videoframes": ("Video Frames", 1, 1000), "videofps": ("Video FPS", 1, 240),
    "videosteps": ("Video Steps", 1, 200), "width": ("Width", 16, 16384), "height": ("Height", 16, 16384),
}
MODEL_PARAMS = {"model": "Model", "videomodel": "Video Model", "videoswapmodel": "Video Swap Model"}
ARCHITECTURE = "wan-2_2-image2video-14b"
_INVALID_SESSION = {"error": "Invalid session ID. You may need to refresh the page.", "error_id": "invalid_session_id"}


class _Killed(Exception):
    """The simulated machine died: drop everything without answering."""


class _Interrupted(Exception):
    """This generation's session was interrupted, or the backend restarted under it."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass
class SimulatedGeneration:
    """One generation the simulated GPU started (a queued one that never got the GPU is not listed)."""

    request_id: str
    transport: str  # "ws" or "http"
    params: dict  # the request body without session_id
    started_at: float  # time.monotonic()
    finished_at: float | None = None
    output_path: str | None = None  # the `View/...` path returned
    error: str | None = None
    session_id: str = ""
    wedged: bool = False  # stopped advancing (see `wedge()`)


class SwarmUISimulator(Simulator):
    def __init__(self, token: str, *, port: int = 0, generation_seconds: float = 0.5, models=None, loras=None,
                 tls: instance_tls.InstanceTLS | None = None, behind_proxy: bool = False,
                 speed_factor: float = 1.0):
        # `behind_proxy`: play SwarmUI as it runs inside the image, behind the TLS terminator — plain HTTP
        # on loopback, and the loopback exemption from its token check (`Network.AuthBypassIPs`) is real.
        self.behind_proxy = behind_proxy
        self.tls = None if behind_proxy else (tls or instance_tls.generate())
        super().__init__(port=port, ssl_context=instance_tls.server_context(self.tls) if self.tls else None)
        self.certificate = self.tls.certificate_pem if self.tls else None
        self.token = token
        self.generation_seconds = generation_seconds
        # The host's own slowness (power limits, PCIe width, other tenants): every clip takes this many
        # times `generation_seconds`. The simulated vast.ai sets it per machine.
        self.speed_factor = speed_factor
        # Boot state, read on every status call; tests and the simulated vast.ai change them.
        self.backend_status = "running"  # GetCurrentStatus `backend_status.status` (§4)
        self.supported_features = ["comfyui", "gguf", "video"]
        self.models = list(models if models is not None else [VIDEO_MODEL])
        self.loras = list(loras if loras is not None else [LIGHTX2V_LORA])
        self.keep_alive_seconds = 30.0  # SwarmUI sends `keep_alive` about every 30 s while a job waits
        self.close_wait_seconds = 2.0  # after `socket_intention: close` SwarmUI waits 2 s for more requests
        self.restart_seconds = 0.5  # how long RestartBackends keeps the backend `loading`
        # What happened, for assertions.
        self.generations: list[SimulatedGeneration] = []
        self.request_log: list[tuple[str, str, bool]] = []  # (method, raw path, had the right token)
        self.interrupts: list[tuple[str, bool]] = []  # InterruptAll calls: (session id, other_sessions)
        self.backend_restarts = 0
        # Sessions whose generations were interrupted while waiting (never got the GPU), for assertions.
        self.interrupted_waiting: list[str] = []

        self._lock = threading.Lock()
        self._gpu = threading.Lock()
        self._unhung = threading.Event()
        self._unhung.set()
        self._killed = False
        self._refuse_ws = False
        self._health_failures: int | bool = False
        self._generation_failures: deque[str] = deque()
        self._sessions: set[str] = set()
        self._files: dict[str, bytes] = {}  # path under View/ -> bytes, in the order they were saved
        self._metadata: dict[str, str] = {}  # path under View/ -> its `.swarm.json` text
        self._counter = 0
        self._queued = self._live = 0
        self._wedges: int | bool = 0
        self._interrupt_epochs: dict[str, int] = {}  # session id -> interrupts so far
        self._restart_epoch = 0
        self._connections = weakref.WeakSet()
        self._server_id = str(uuid.uuid4())

    # --- fault injection (thread-safe) ---

    def kill(self):
        """The machine is gone: the port stops accepting and every open connection drops."""
        with self._lock:
            if self._killed:
                return
            self._killed = True
        self._unhung.set()  # let hung handlers wake up, see the kill and drop their connection
        if self._thread is not None:
            self._server.shutdown()
        self._server.server_close()
        for connection in list(self._connections):
            _drop(connection)

    def stop(self):
        self.kill()

    def hang(self, enabled: bool = True):
        """Accept connections but answer nothing (in-flight generations freeze too) until `hang(False)`."""
        if enabled:
            self._unhung.clear()
        else:
            self._unhung.set()

    def fail_health(self, n_or_bool: int | bool = True):
        """Status routes (GetCurrentStatus, ListBackends, ListModels, GET /) fail: `True` until
        `fail_health(False)`, or a number of times."""
        with self._lock:
            self._health_failures = n_or_bool

    def expire_sessions(self):
        """Forget every session: the next call gets 401. As SwarmUI's `SessionHandler.RemoveSession`
        does, the removed sessions' generations are interrupted (it cancels their `SessInterrupt`): a
        session never outlives its generations, nor they it."""
        with self._lock:
            self._sessions.clear()

    def fail_next_generation(self, message: str = "ComfyUI execution error: simulated failure"):
        """The next generation to get the GPU fails with this route error (queued: call it twice for two)."""
        with self._lock:
            self._generation_failures.append(message)

    def wedge(self, n_or_bool: int | bool = True):
        """SwarmUI's queue wedges (upstream issue #1219): the next generation(s) to get the GPU stop
        advancing after their first step while the WebSocket stays open on `keep_alive`s and every status
        route answers. `True` wedges every generation (even after a restart: a broken machine), a number
        that many. An interrupt or a backend restart ends a wedged generation like any other."""
        with self._lock:
            self._wedges = n_or_bool

    def refuse_websockets(self, enabled: bool = True):
        """Behave as behind a proxy that drops the `Upgrade` header: the WS handshake reaches SwarmUI
        as a plain GET on /API/..., which it redirects to `/Error/NoGetAPI` (§2.2)."""
        self._refuse_ws = enabled

    def status_waiting(self) -> int:
        """Generations waiting for the GPU, across all sessions (for assertions)."""
        with self._lock:
            return self._queued

    # --- observation (read-only) ---

    def generation_counts(self, key: str = "seed", *, completed: bool = False) -> Counter:
        """Generations that got the GPU, counted per value of the request parameter `key`. The job's seed
        identifies it (unique when the caller makes it so); genhub's tag in `extra_metadata` names the attempt.
        `completed=True` counts only those that produced a clip."""
        with self._lock:
            return Counter(g.params.get(key) for g in self.generations if not completed or g.output_path)

    def fetched_outputs(self) -> set[str]:
        """The `View/...` paths of the outputs a client has downloaded (compare `output_path`)."""
        with self._lock:
            return {unquote(urlsplit(path).path).lstrip("/") for method, path, authorized in self.request_log
                    if method == "GET" and authorized and path.startswith("/View/")}

    # --- request handling ---

    def handle(self, request: SimulatorHandler):
        self._connections.add(request.connection)
        try:
            self._alive()
            # Always drain the body: left unread, it would be parsed as the next request on the connection.
            body = request.read_body()
            authorized = request.headers.get("Authorization") == self.token or (
                self.behind_proxy and request.client_address[0] in ("127.0.0.1", "::1"))
            with self._lock:
                self.request_log.append((request.command, request.path, authorized))
            if not authorized:
                # `Network.RequiredAuthorization` (src/Core/WebServer.cs Prep): exact match or a plain
                # 401 on every path, WebSocket handshakes and /View files included. The loopback
                # bypass applies only `behind_proxy`: genhub itself never calls from the instance's loopback.
                request.send_bytes(401, b"Unauthorized", "text/plain")
                return
            self._route(request, body)
        except (_Killed, OSError):
            request.close_connection = True
            _drop(request.connection)

    def _route(self, request: SimulatorHandler, body: bytes):
        path = request.path_only
        if request.headers.get("Upgrade", "").lower() == "websocket" and not self._refuse_ws \
                and path.lower().startswith("/api/"):
            try:
                self._websocket(request, path[len("/api/"):].lower())
            finally:
                # The server closes the TCP connection first (RFC 6455 §7.1.1); this also ends the
                # session's reader thread, which would otherwise keep the handler from finishing.
                request.close_connection = True
                _drop(request.connection)
        elif request.command == "POST" and path.lower().startswith("/api/"):
            self._api(request, path[len("/api/"):].lower(), body)
        elif request.command != "GET":
            request.send_bytes(405, b"Method Not Allowed", "text/plain")
        elif path == "/":
            if self._health_failing():
                request.send_bytes(500, b"Internal Server Error", "text/plain")
            else:  # the liveness probe: SwarmUI redirects to the UI (§4 "Health checks")
                request.send_bytes(302, b"", "text/plain", {"Location": "Text2Image"})
        elif path.lower().startswith("/api/"):
            request.send_bytes(302, b"", "text/plain", {"Location": "/Error/NoGetAPI"})
        elif path.startswith("/Error/"):
            request.send_bytes(200, b"<html><body>SwarmUI error page</body></html>", "text/html")
        elif path.startswith("/View/"):
            self._view(request)
        else:
            request.send_json(404, {"error": "404, file not found.", "error_id": "file_not_found"})

    def _api(self, request: SimulatorHandler, route: str, raw: bytes):
        """`src/WebAPI/API.cs` HandleAsyncRequest, in its order of checks (§2.2)."""
        if request.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return request.send_json(400, {"error_id": "basic_api", "error": "Wrong content type"})
        if not raw:
            return request.send_json(400, {"error_id": "basic_api", "error": "bad content length"})
        try:
            body = json.loads(raw)
        except ValueError:
            return request.send_json(400, {"error_id": "internal_error", "error": "An internal error occurred"})
        if not isinstance(body, dict):
            return request.send_json(400, {"error_id": "basic_api", "error": "null input"})
        if route not in ("getnewsession", "login"):
            session_id = body.get("session_id", request.headers.get("X-Session-ID"))
            if session_id is None:
                return request.send_json(400, {"error_id": "basic_api", "error": "missing session id"})
            if not self._session_is_valid(str(session_id)):
                return request.send_json(401, _INVALID_SESSION)
        if route == "generatetext2imagews":
            return request.send_json(400, {"error_id": "bad_request_method",
                                           "error": "API route needs websocket, request is HTTP"})
        handler = self._http_routes().get(route)
        if handler is None:
            return request.send_json(400, {"error_id": "bad_route", "error": "Unknown API route"})
        if route in STATUS_ROUTES and self._health_failing():
            return request.send_json(400, {"error_id": "internal_error", "error": "An internal error occurred"})
        request.send_json(200, handler(body))

    def _http_routes(self) -> dict:
        return {
            "getnewsession": self._get_new_session,
            "getcurrentstatus": lambda body: self._status_payload(),
            "listbackends": lambda body: self._backends_payload(),
            "listmodels": self._list_models,
            "listimages": self._list_images,
            "generatetext2image": self._generate_http,
            "interruptall": self._interrupt_all,
            "restartbackends": self._restart_backends,
        }

    def _interrupt_all(self, body: dict) -> dict:
        """`InterruptAll`: this session's generations, or (`other_sessions`) those of all the user's sessions."""
        session_id = str(body.get("session_id"))
        other = bool(body.get("other_sessions", False))
        with self._lock:
            self.interrupts.append((session_id, other))
            for target in (set(self._sessions) | {session_id}) if other else {session_id}:
                self._interrupt_epochs[target] = self._interrupt_epochs.get(target, 0) + 1
        return {"success": True}

    def _restart_backends(self, body: dict) -> dict:
        """`RestartBackends`: only a running or errored backend restarts; it loads again, then runs."""
        if body.get("backend", "all") not in ("all", "0"):
            return {"result": "Success.", "count": 0}
        with self._lock:
            if self.backend_status not in ("running", "errored"):
                return {"result": "Success.", "count": 0}
            self.backend_restarts += 1
            self._restart_epoch += 1
            self.backend_status = "loading"
        timer = threading.Timer(self.restart_seconds, self._restarted)
        timer.daemon = True
        timer.start()
        return {"result": "Success.", "count": 1}

    def _restarted(self):
        with self._lock:
            if self.backend_status == "loading" and not self._killed:
                self.backend_status = "running"

    def _epoch(self, session_id: str) -> tuple[int, int]:
        with self._lock:
            return self._interrupt_epochs.get(session_id, 0), self._restart_epoch

    def _check_interrupt(self, session_id: str, epoch: tuple[int, int], *, running: bool = True):
        """A restart ends the generations the backend was running; one still waiting just waits longer. An
        interrupt, or the removal of the session, ends both."""
        now = self._epoch(session_id)
        if running and now[1] != epoch[1]:
            raise _Interrupted(BACKEND_RESTARTED)
        if now[0] != epoch[0] or not self._session_is_valid(session_id):
            raise _Interrupted(INTERRUPTED)

    def _get_new_session(self, body: dict) -> dict:
        session_id = secrets.token_hex(20).upper()  # 40 hex chars (§2.1)
        with self._lock:
            self._sessions.add(session_id)
        return {"session_id": session_id, "user_id": "local", "output_append_user": True,
                "version": "0.9.8.2.GIT-simulate", "server_id": self._server_id, "permissions": ["*"]}

    def _session_is_valid(self, session_id: str) -> bool:
        with self._lock:
            return session_id in self._sessions

    def _health_failing(self) -> bool:
        with self._lock:
            if self._health_failures is True:
                return True
            if self._health_failures:  # a positive count
                self._health_failures -= 1
                return True
            return False

    def _status_payload(self) -> dict:
        status = self.backend_status
        with self._lock:
            queued, live = self._queued, self._live
        return {
            "status": {"waiting_gens": queued, "loading_models": 0,
                       "waiting_backends": queued if status != "running" else 0, "live_gens": live},
            "backend_status": {"status": status, "class": "" if status == "running" else "warn",
                               "message": "" if status == "running" else "Backends are still loading...",
                               "any_loading": status in ("loading", "some_loading")},
            # Only backends that are up report their features (so no `gguf` while booting).
            "supported_features": list(self.supported_features) if status == "running" else [],
        }

    def _backends_payload(self) -> dict:
        overall = self.backend_status
        if overall == "empty":
            return {}
        # Per-backend states are fewer than overall ones (§4 ListBackends).
        status = {"some_loading": "loading", "all_disabled": "disabled", "unknown": "waiting"}.get(overall, overall)
        return {"0": {"id": 0, "type": "comfyui_selfstart", "status": status, "settings": {}, "modcount": 0,
                      "features": list(self.supported_features) if status == "running" else [],
                      "enabled": status != "disabled", "title": "ComfyUI Self-Starting", "can_load_models": True,
                      "max_usages": 1, "current_model": None}}

    def _list_models(self, body: dict) -> dict:
        for required in ("path", "depth"):
            if required not in body:
                return {"error": f"Missing required parameter '{required}'"}
        subtype = body.get("subtype", "Stable-Diffusion")
        if subtype == "Stable-Diffusion":
            names = list(self.models)
        elif subtype == "LoRA":
            # Listed with their file extension, though requests may leave it out.
            names = [name if name.endswith(".safetensors") else f"{name}.safetensors" for name in self.loras]
        else:
            return {"error": "Invalid sub-type."}
        prefix = f"{body['path']}/" if body["path"] else ""
        files = [{"name": name, "title": name.rsplit("/", 1)[-1], "local": True,
                  "architecture": ARCHITECTURE + ("/lora" if subtype == "LoRA" else ""),
                  "special_format": "gguf" if name.endswith(".gguf") else ""}
                 for name in names if name.startswith(prefix)]
        return {"folders": [], "files": files}

    def _list_images(self, body: dict) -> dict:
        """`ListImages` (T2IAPI.cs GetListAPIInternal): the user's outputs under `path`, each with its
        metadata text. Files are listed from the folders above the last level of `depth` only; sorted by
        `Date`, the newest come first; at most MaxImagesInHistory (1,000) are returned."""
        for required in ("path", "depth"):
            if required not in body:
                return {"error": f"Missing required parameter '{required}'"}
        root = "local/" + (f"{str(body['path']).strip('/')}/" if body["path"] else "")
        depth = _as_int(body["depth"]) or 0
        with self._lock:
            saved = [(path, self._metadata.get(path)) for path in self._files if path.startswith(root)]
        listed = [(path[len(root):], metadata) for path, metadata in saved
                  if path[len(root):].count("/") < depth and metadata is not None]
        if str(body.get("sortBy", "Name")).lower() == "date":
            listed.reverse()
        else:
            listed.sort(key=lambda item: item[0], reverse=True)
        if body.get("sortReverse") is True:
            listed.reverse()
        return {"folders": sorted({src.rsplit("/", 1)[0] for src, _ in listed if "/" in src}, reverse=True),
                "files": [{"src": src, "metadata": metadata} for src, metadata in listed[:1000]]}

    def _view(self, request: SimulatorHandler):
        # SwarmUI un-escapes the raw path (`Uri.UnescapeDataString`, WebServer.cs ViewOutput), so only a
        # correctly percent-encoded request finds a name holding spaces, `%` or `+`.
        raw = urlsplit(request.path).path[len("/View/"):]
        with self._lock:
            data = self._files.get(unquote(raw))
        if data is None:
            return request.send_json(404, {"error": "404, file not found.", "error_id": "file_not_found"})
        request.send_bytes(200, data, "video/mp4")

    # --- generation ---

    def _generate_http(self, body: dict) -> dict:
        """`GenerateText2Image`: the same work, answered once at the end (§3.1)."""
        outputs = []
        self._generate(body, outputs.append, transport="http")
        for output in outputs:
            if "error" in output:
                return output
        return {"images": [output["image"] for output in outputs if "image" in output]}

    def _generate(self, body: dict, emit, *, transport: str):
        """`GenT2I_Internal`: emits the WS messages in SwarmUI's order (the HTTP route collects them)."""
        if transport == "ws":
            emit(self._status_payload())
        error = self._validate(body)
        if error:
            emit({"error": error})
            return
        session_id = str(body.get("session_id", ""))
        epoch = self._epoch(session_id)
        with self._lock:
            self._queued += 1
        try:
            self._wait_for_gpu(emit, session_id, epoch)
            epoch = (epoch[0], self._epoch(session_id)[1])  # a restart while it waited does not end it
        except _Interrupted as exc:
            with self._lock:
                self.interrupted_waiting.append(session_id)
            emit({"error": exc.message})
            return
        finally:
            with self._lock:
                self._queued -= 1
        try:
            with self._lock:
                self._counter += 1
                self._live += 1
                record = SimulatedGeneration(str(self._counter), transport,
                                             {k: v for k, v in body.items() if k != "session_id"}, time.monotonic(),
                                             session_id=session_id)
                self.generations.append(record)
                failure = self._generation_failures.popleft() if self._generation_failures else None
                if self._wedges:
                    record.wedged = True
                    if self._wedges is not True:
                        self._wedges -= 1
            try:
                self._run(record, body, emit, failure, epoch)
            except _Killed:
                record.error = "killed"
                raise
            except _Interrupted as exc:
                record.error = exc.message
                emit({"error": exc.message})
            finally:
                record.finished_at = time.monotonic()
                with self._lock:
                    self._live -= 1
        finally:
            self._gpu.release()

    def _wait_for_gpu(self, emit, session_id: str, epoch: tuple[int, int]):
        """Wait for a running backend, then for the GPU, which runs one job at a time."""
        last_sign = time.monotonic()
        while True:
            self._alive()
            self._check_interrupt(session_id, epoch, running=False)
            if self.backend_status == "running":
                if self._gpu.acquire(timeout=0.05):
                    try:
                        self._check_interrupt(session_id, epoch, running=False)
                    except _Interrupted:
                        self._gpu.release()
                        raise
                    return
            else:
                time.sleep(0.05)
            if time.monotonic() - last_sign >= self.keep_alive_seconds:
                emit({"keep_alive": True})
                last_sign = time.monotonic()

    def _run(self, record: SimulatedGeneration, body: dict, emit, failure: str | None, epoch: tuple[int, int]):
        seconds = self.generation_seconds * self.speed_factor
        steps = max(int(body.get("videosteps") or 20), math.ceil(seconds / 2))
        # The backend reports as soon as its workflow starts executing, before the first sampling step.
        emit({"gen_progress": {"batch_index": "0", "request_id": record.request_id, "overall_percent": 0.0,
                               "current_percent": 0.0}})
        for step in range(1, steps + 1):
            time.sleep(seconds / steps)
            self._alive()
            self._check_interrupt(record.session_id, epoch)
            if record.wedged and step > 1:
                self._stay_wedged(record, emit, epoch)
            if failure and step > steps // 2:
                record.error = failure
                emit({"error": failure})
                return
            emit({"gen_progress": {"batch_index": "0", "request_id": record.request_id,
                                   "overall_percent": step / steps, "current_percent": step / steps}})
        width, height = _video_size(body)
        video = make_video(_image_bytes(body["initimage"]), frames=int(body.get("videoframes", 25)),
                           fps=int(body.get("videofps", 24)), width=width, height=height)
        # What SwarmUI saves with the output (`.swarm.json` for mp4) and sends with it: the parameters,
        # and in `sui_extra_data` the request's `extra_metadata` and the times (T2IEngine.cs).
        extra = {str(key): str(value) for key, value in (body.get("extra_metadata") or {}).items()} \
            if isinstance(body.get("extra_metadata"), dict) else {}
        extra.update(prep_time="0.00 sec", generation_time=_seconds_text(time.monotonic() - record.started_at))
        metadata = json.dumps({"sui_image_params": {key: body.get(key) for key in (
            "prompt", "seed", "model", "videomodel", "videoframes", "videofps", "videosteps")},
            "sui_extra_data": extra})
        record.output_path = "View/" + self._save(body, video, metadata)
        emit({"image": record.output_path, "batch_index": "0", "request_id": record.request_id,
              "metadata": metadata})
        emit({"discard_indices": []})

    def _stay_wedged(self, record: SimulatedGeneration, emit, epoch: tuple[int, int]):
        """No more progress, ever; the socket only hears keep-alives until an interrupt or restart."""
        last_sign = time.monotonic()
        while True:
            time.sleep(0.05)
            self._alive()
            self._check_interrupt(record.session_id, epoch)
            if time.monotonic() - last_sign >= self.keep_alive_seconds:
                emit({"keep_alive": True})
                last_sign = time.monotonic()

    def _save(self, body: dict, video: bytes, metadata: str) -> str:
        """Default `OutPath.Format`: raw/[year]-[month]-[day]/[hour][minute][request_time_inc]-[prompt]-[model]."""
        now = datetime.now()
        prompt = _path_part(str(body.get("prompt", "")))
        model = _path_part(str(body["videomodel"]).rsplit(".", 1)[0])
        with self._lock:
            path = f"local/raw/{now:%Y-%m-%d}/{now:%H%M}{self._counter}-{prompt}-{model}.mp4"
            self._files[path] = video
            self._metadata[path] = metadata
        return path

    def _validate(self, body: dict) -> str | None:
        """Route-level parameter errors, worded as SwarmUI words them (§2.2 "Notes")."""
        if "images" not in body:
            return "Missing required parameter 'images'"
        for key, (name, low, high) in INT_PARAMS.items():
            if key in body:
                value = _as_int(body[key])
                if value is None or not low <= value <= high:
                    return f"Invalid value for parameter {name}: '{body[key]}' must be an integer from {low} to {high}"
        if not body.get("model"):
            return "No model input given. Did your UI load properly?"
        # Exact names only: stricter than SwarmUI's fuzzy matching (§3.1), to catch a client sending wrong ones.
        for key, name in MODEL_PARAMS.items():
            if key in body and body[key] not in self.models:
                return (f"Invalid value for parameter {name}: Invalid model value for param {name} - "
                        f"'{body[key]}' - are you sure that model name is correct?")
        if not body.get("videomodel") or not body.get("initimage"):
            return "Simulated SwarmUI only runs image-to-video: set videomodel and initimage"
        if _image_bytes(body["initimage"]) is None:
            return "Invalid value for parameter Init Image: the image data is not a valid image"
        listed = {name.removesuffix(".safetensors") for name in self.loras}
        loras = _as_list(body.get("loras"))
        for lora in loras:
            if lora.removesuffix(".safetensors") not in listed:
                return f"Invalid value for parameter LoRAs: unknown LoRA '{lora}'"
        confinement = _as_list(body.get("lorasectionconfinement"))
        if confinement and (len(confinement) != len(loras) or any(_as_int(c) is None for c in confinement)):
            return "Invalid value for parameter LoRA Section Confinement: needs one section id per LoRA"
        if body.get("videoformat", "h264-mp4") not in VIDEO_FORMATS:
            return f"Invalid value for parameter Video Format: '{body['videoformat']}' is not a known format"
        return None

    def _alive(self):
        """Called at every step: a hung machine blocks here, a dead one stops."""
        self._unhung.wait()
        if self._killed:
            raise _Killed()

    # --- WebSocket ---

    def _websocket(self, request: SimulatorHandler, route: str):
        """The WS side of API.cs HandleAsyncRequest: accept, read one JSON request (within 1 minute),
        then the same session/route checks as HTTP, answered as a message followed by a close (§2.2)."""
        ws = _WebSocket.accept(request, pause=self._alive)
        if ws is None:
            return
        body = ws.receive_json(timeout=60)
        if body is None:
            return
        if not isinstance(body, dict):
            return ws.fail({"error_id": "internal_error", "error": "An internal error occurred"})
        if "session_id" not in body:
            return ws.fail({"error_id": "basic_api", "error": "missing session id"})
        if not self._session_is_valid(str(body["session_id"])):
            return ws.fail(_INVALID_SESSION)
        if route != "generatetext2imagews":
            if route in self._http_routes():
                return ws.fail({"error_id": "bad_request_method",
                                "error": "API route needs HTTP, request is websocket"})
            return ws.fail({"error": "Unknown API route.", "error_id": "bad_route"})
        self._generate(body, ws.send_json, transport="ws")
        ws.send_json({"socket_intention": "close"})
        if not ws.closed.wait(self.close_wait_seconds):  # the client normally closes first
            ws.send_json(self._status_payload())
            ws.close()


class _WebSocket:
    """The server side of one RFC 6455 connection, on the socket of an http.server handler.

    Server frames are sent unmasked, client frames must be masked (§5.1); no extensions are
    negotiated, so the client's permessage-deflate offer is declined by omission (§9.1). A reader
    thread answers pings and the client's close while the handler thread streams messages.
    """

    def __init__(self, request: SimulatorHandler, pause):
        self._request = request
        self._pause = pause
        self._send_lock = threading.Lock()
        self._close_sent = False
        self._messages: queue.Queue[str | None] = queue.Queue()
        self.closed = threading.Event()
        threading.Thread(target=self._read, name="swarmui-ws-reader", daemon=True).start()

    @classmethod
    def accept(cls, request: SimulatorHandler, *, pause) -> "_WebSocket | None":
        key = request.headers.get("Sec-WebSocket-Key")
        if not key or request.headers.get("Sec-WebSocket-Version") != "13" \
                or "upgrade" not in request.headers.get("Connection", "").lower():
            request.send_bytes(400, b"Bad WebSocket handshake", "text/plain")
            return None
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        request.send_response(101, "Switching Protocols")
        request.send_header("Upgrade", "websocket")
        request.send_header("Connection", "Upgrade")
        request.send_header("Sec-WebSocket-Accept", accept)
        request.end_headers()
        return cls(request, pause)

    def receive_json(self, *, timeout: float):
        """The first message, parsed (a non-object when it is not JSON); None when none came."""
        try:
            message = self._messages.get(timeout=timeout)
        except queue.Empty:
            return None
        if message is None:
            return None
        try:
            return json.loads(message)
        except ValueError:
            return []

    def send_json(self, payload: dict):
        if not self._close_sent:
            self._send(OP_TEXT, json.dumps(payload).encode())

    def fail(self, payload: dict):
        """`YieldJsonOutput` on a socket: the error as a message, then a normal close."""
        self.send_json(payload)
        self.close()

    def close(self, code: int = 1000):
        with self._send_lock:
            if self._close_sent:
                return
            self._close_sent = True
        self._send(OP_CLOSE, struct.pack("!H", code))
        self.closed.wait(5)  # the client's close frame

    def _send(self, opcode: int, payload: bytes):
        with self._send_lock:
            try:
                self._request.wfile.write(_frame(opcode, payload))
            except OSError:
                self.closed.set()

    def _read(self):
        # Later messages would be further generation requests on the same socket: not simulated.
        try:
            while (message := self._next_message()) is not None:
                self._messages.put(message)
        except (OSError, EOFError, ValueError, _Killed):
            pass
        self.closed.set()
        self._messages.put(None)

    def _next_message(self) -> str | None:
        """The next text message; control frames are answered on the way. None after a close."""
        parts = []
        while True:
            fin, opcode, payload = _read_frame(self._request.rfile)
            self._pause()
            if opcode == OP_PING:
                self._send(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                with self._send_lock:
                    echo = not self._close_sent
                    self._close_sent = True
                if echo:
                    self._send(OP_CLOSE, payload[:2])
                return None
            elif opcode in (OP_TEXT, OP_CONTINUATION):
                parts.append(payload)
                if fin:
                    return b"".join(parts).decode()


def _read_frame(rfile) -> tuple[bool, int, bytes]:
    head = _read_exact(rfile, 2)
    fin, opcode = bool(head[0] & 0x80), head[0] & 0x0F
    masked, length = head[1] & 0x80, head[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", _read_exact(rfile, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", _read_exact(rfile, 8))[0]
    if not masked:
        raise ValueError("client frames must be masked (RFC 6455 §5.1)")
    mask = _read_exact(rfile, 4)
    data = _read_exact(rfile, length)
    key = (mask * (length // 4 + 1))[:length]
    return fin, opcode, (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")


def _read_exact(rfile, size: int) -> bytes:
    data = rfile.read(size)
    if len(data) < size:
        raise EOFError("connection closed")
    return data


def _frame(opcode: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 2**16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return head + payload


def _drop(connection: socket.socket):
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _video_size(body: dict) -> tuple[int, int]:
    """`videoresolution: "Image"` renders at the request's width × height; without it SwarmUI uses the
    model's preferred size, 960 × 960 for Wan 2.2 I2V 14B."""
    if body.get("videoresolution") == "Image":
        return int(body.get("width", 1024)), int(body.get("height", 1024))
    return 960, 960


def _image_bytes(value) -> bytes | None:
    """An init image given as a data URI or raw base64 (§3.1 value formats), if it is a real image."""
    if not isinstance(value, str):
        return None
    try:
        data = base64.b64decode(value.split(",", 1)[1] if value.startswith("data:") else value, validate=True)
        Image.open(io.BytesIO(data)).verify()
    except (IndexError, binascii.Error, ValueError, OSError, SyntaxError):
        return None
    return data


def _as_int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _as_list(value) -> list[str]:
    """A JSON array or a comma-separated string (§3.1 value formats)."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(item) for item in value]
    return [item.strip() for item in str(value).split(",")]


def _seconds_text(seconds: float) -> str:
    """T2IEngine.cs's format for `generation_time`: seconds, or minutes past two of them."""
    return f"{seconds / 60:.2f} min" if seconds > 120 else f"{seconds:.2f} sec"


def _path_part(text: str) -> str:
    cleaned = "".join(char for char in text if char not in FORBIDDEN_PATH_CHARS and char.isprintable())
    return cleaned.strip()[:40]
