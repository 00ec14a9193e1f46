"""Client for the SwarmUI HTTP/WebSocket API on a genhub GPU instance.

Quirks it handles (from SwarmUI's API docs and source; each one has broken real clients):

- every route is `POST /API/<Route>` with a JSON body carrying `session_id` (§1, §2.2);
- an unknown or expired session is HTTP 401 `error_id: invalid_session_id` (a WS message with that
  `error_id` on the WebSocket route): get a new session once and retry once (§2.2);
- route-level failures come back as HTTP 200 with `{"error": ...}` (§2.2), so every JSON answer is checked;
- the instance's per-instance secret is SwarmUI's `Network.RequiredAuthorization`: every request,
  including the WebSocket handshake and file downloads, must carry it as the exact `Authorization`
  header, or the server answers a plain-text 401 `Unauthorized` (§2.3);
- the WS `image` message is flat (`{"image": "View/...", ...}`), not nested as the docs say (§3.3);
- output paths contain spaces and prompt text and must be percent-encoded when fetched (§3.2);
- `extra_metadata` (a string map on the generation's root) is saved with the output (`sui_extra_data` in
  its `.swarm.json`) and `ListImages` returns it: genhub tags each generation with the attempt that sent
  it, so a clip whose worker died before collecting it is found again instead of generated again;
- `InterruptAll` stops the generations of the calling *session* (all of the user's sessions with
  `other_sessions: true`; src/WebAPI/BasicAPIFeatures.cs). SwarmUI has no per-request interrupt, so each
  generation in flight runs on a session of its own, and cancelling one job interrupts only that job.
- the channel is TLS to the instance's own terminator, pinned to the certificate genhub made for it
  (`providers/instance_tls.py`): plain http, a CA-signed or any other certificate is refused, and so
  is an instance address that is not public (`providers/addresses.py`). Output paths from its replies
  are fetched only as relative `View/…` paths on that same pinned base URL.
"""

import base64
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from providers import instance_tls
from providers.addresses import check_peer
from providers.errors import ConfigurationError, PermanentError, ProviderError, TransientError
from providers.http import HttpClient
from providers.swarmui_contract import (
    LIGHTX2V_LORA,
    LIGHTX2V_LORA_LOW,
    LORA_SECTION_VIDEO,
    LORA_SECTION_VIDEO_SWAP,
    REQUIRED_LORAS,
    REQUIRED_MODELS,
    VIDEO_MODEL,
)

log = logging.getLogger(__name__)

# How often a generation's wait checks whether its caller wants it stopped: a cancel frees the GPU within this.
CANCEL_POLL_SECONDS = 0.5
SERVICE = "SwarmUI"
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".gif", ".webp")
# Route errors that mean the request itself is wrong (§2.2 "Notes": param validation and missing
# handler params). Sending the same request again, here or on a replacement instance built from the
# same image, fails the same way, so they are permanent. Everything else a route reports (backend
# or ComfyUI failure, out of memory, "Generation session interrupted.", a failed save) depends on
# the state of this server and may succeed on a retry, so it is transient.
PARAMETER_ERROR_PREFIXES = ("Invalid value for parameter", "Missing required parameter", "No model input given")
# The `extra_metadata` key genhub tags its generations with (the job and attempt that sent it).
WORK_TAG_KEY = "genhub_work"
# `ListImages` depth under `raw/`: the default output format puts files in `raw/<date>/`, and the
# route lists the files of a folder only above the last level of depth.
OUTPUT_LIST_DEPTH = 2


@dataclass(frozen=True)
class GeneratedVideo:
    path: str  # the `View/...` path SwarmUI returned (or a data URI when `donotsave` was set)
    video: bytes
    request_id: str | None = None


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str


class _NoDebugLogger(logging.LoggerAdapter):
    """websockets logs every handshake header, `Authorization` included, at DEBUG: never let it."""

    def isEnabledFor(self, level):
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


_WS_LOGGER = _NoDebugLogger(logging.getLogger("websockets.client"), {})


class _SessionExpired(Exception):
    """SwarmUI no longer knows our session id (HTTP 401 / WS error with `invalid_session_id`)."""


class GenerationCancelled(TransientError):
    """The caller asked for the generation to stop; it was interrupted in SwarmUI."""

    def __init__(self, message: str = "SwarmUI: generation interrupted at genhub's request"):
        super().__init__(message, code="cancelled")


class _WebSocketUnavailable(Exception):
    """The WebSocket route cannot be used here; the request never reached the generator."""


def build_video_params(*, image: bytes, image_content_type: str, prompt: str, negative_prompt: str, seed: int,
                       num_frames: int, fps: int, width: int, height: int, steps: int, cfg: float,
                       video_model: str | None = None, swap_model: str | None = None, work_tag: str = "") -> dict:
    """The generation body for Wan 2.2 image-to-video (§3.5).

    The Wan model goes in the Image To Video group (`videomodel`), not `model` nor the refiner; `model`
    is still required by the workflow, so it is the same model, and `initimagecreativity: 0` makes
    SwarmUI skip the base (image) stage. Without `videoresolution: "Image"` the server would render
    at the model-preferred 960x960 and ignore width/height (§1.9). Unconfined LoRAs apply to every
    model loader, so the lightx2v LoRAs are confined to their expert's section (§3.4). `work_tag` is
    saved with the output (`extra_metadata`), so that `find_output` can find it again.
    """
    video_model = video_model or VIDEO_MODEL
    encoded = base64.b64encode(image).decode("ascii")
    params = {
        "images": 1,
        "prompt": prompt,
        "negativeprompt": negative_prompt,
        "seed": seed,
        "model": video_model,
        "videomodel": video_model,
        "initimage": f"data:{image_content_type};base64,{encoded}",
        "initimagecreativity": 0,
        "videoresolution": "Image",
        "width": width,
        "height": height,
        "videoframes": num_frames,
        "videofps": fps,
        "videosteps": steps,
        "videocfg": cfg,
        "videoformat": "h264-mp4",
        "loras": [LIGHTX2V_LORA],
        "loraweights": ["1"],
        "lorasectionconfinement": [LORA_SECTION_VIDEO],
    }
    if work_tag:
        params["extra_metadata"] = {WORK_TAG_KEY: work_tag}
    if swap_model:
        # The low-noise expert takes the last `videoswappercent` of the steps (0.5 is also the floor).
        params["videoswapmodel"] = swap_model
        params["videoswappercent"] = 0.5
        params["loras"].append(LIGHTX2V_LORA_LOW)
        params["loraweights"].append("1")
        params["lorasectionconfinement"].append(LORA_SECTION_VIDEO_SWAP)
    return params


def swarmui_http(token: str, certificate: str, **options) -> HttpClient:
    """The HTTP side of a SwarmUI client: the token header, the pinned certificate, public peers only."""
    return HttpClient(SERVICE, headers={"Authorization": token}, public_only=True, pinned_certificate=certificate,
                      **options)


class SwarmUIClient:
    """One SwarmUI server. Thread-safe: jobs on the same instance may share a client.

    `status_timeout` bounds the read of status routes (health checks must answer quickly);
    `generation_timeout` bounds the blocking HTTP generation route, which sends nothing until the
    video is done (§3.1); a WebSocket that stays silent for `ws_idle_timeout` is treated as lost —
    SwarmUI sends progress or a `keep_alive` at least every ~30 s while a job is waiting or running.
    """

    def __init__(self, base_url: str, token: str, *, certificate: str | None = None, http: HttpClient | None = None,
                 status_timeout: float = 10.0, generation_timeout: float = 1800.0,
                 ws_open_timeout: float = 10.0, ws_idle_timeout: float = 120.0):
        self.base_url = base_url.rstrip("/")
        # The token is owner-level access to a paid GPU: it only ever travels over the pinned channel.
        if urlsplit(self.base_url).scheme != "https" or not certificate:
            raise ConfigurationError(f"SwarmUI at {self.base_url}: genhub talks to an instance only over https "
                                     "pinned to the certificate it made for it, and has none for this one")
        self._auth = {"Authorization": token}
        self.http = http or swarmui_http(token, certificate)
        if self.http.pinned_certificate != certificate or not self.http.public_only:
            raise ConfigurationError("SwarmUI: the HTTP client must pin the instance's certificate")
        self._ssl_context = instance_tls.client_context(certificate)
        self.status_timeout = status_timeout
        self.generation_timeout = generation_timeout
        self.ws_open_timeout = ws_open_timeout
        self.ws_idle_timeout = ws_idle_timeout
        self._session_id: str | None = None
        # `View/<user>/` as the server announced it with a session; None when it saves to the legacy
        # `Output/` route (`AppendUserNameToOutputPath` off), whose files genhub does not fetch.
        self._outputs_prefix: str | None = None
        self._session_lock = threading.Lock()
        # Generations in flight hold a session each (the main one first), so an interrupt reaches one job only.
        self._busy_sessions: set[str] = set()
        self._spare_sessions: list[str] = []

    def __repr__(self):
        return f"SwarmUIClient({self.base_url!r})"  # never the token

    # --- health ---

    def status(self) -> dict:
        """`GetCurrentStatus`: queue counts, `backend_status` and `supported_features`."""
        return self._call("GetCurrentStatus", {}, read_timeout=self.status_timeout)

    def is_ready(self, required_models=REQUIRED_MODELS, required_loras=REQUIRED_LORAS) -> Readiness:
        """Whether this server can take work now. Never raises: a server that is down, booting or
        missing files is simply not ready, with the reason."""
        try:
            status = self.status()
            backend = (status.get("backend_status") or {}).get("status") or "unknown"
            if backend != "running":  # §4: ready <=> running
                return Readiness(False, f"SwarmUI backend is {backend}")
            # SwarmUI reports `gguf` in `supported_features` only when ComfyUI-GGUF is installed in the
            # backend's node folder (§3.6). It is the only signal the API gives: it does not prove the
            # node imported cleanly, which only a generation would show.
            if any(name.endswith(".gguf") for name in required_models) \
                    and "gguf" not in (status.get("supported_features") or []):
                return Readiness(False, "SwarmUI has no GGUF support installed")
            missing = self._missing("Stable-Diffusion", required_models) + self._missing("LoRA", required_loras)
        except ProviderError as exc:
            return Readiness(False, exc.message)
        if missing:
            return Readiness(False, "SwarmUI does not list: " + ", ".join(missing))
        return Readiness(True, "ready")

    # --- recovery ---

    def interrupt_all(self) -> None:
        """`InterruptAll` for every session of genhub's SwarmUI user: every generation, running or waiting."""
        self._call("InterruptAll", {"other_sessions": True}, read_timeout=self.status_timeout)

    def restart_backends(self) -> int:
        """`RestartBackends`: restarts the running (or errored) backends and returns how many; they are
        `loading` until they run again, which `is_ready` tells."""
        answer = self._call("RestartBackends", {"backend": "all"}, read_timeout=self.status_timeout)
        count = answer.get("count")
        return count if isinstance(count, int) else 0

    def interrupt_session(self, session_id: str) -> None:
        """Ends the generations of one session. Best effort: a failure here leaves the generation to the
        watchdog, which interrupts everything."""
        try:
            self._post("InterruptAll", {"session_id": session_id, "other_sessions": False},
                       read_timeout=self.status_timeout)
        except (ProviderError, _SessionExpired) as exc:
            log.warning("SwarmUI at %s: could not interrupt a cancelled generation: %s", self.base_url, exc)

    def _missing(self, subtype: str, names) -> list[str]:
        if not names:
            return []
        # GGUF diffusion models are listed under `Stable-Diffusion` (§4); `depth` is required.
        listing = self._call("ListModels", {"path": "", "depth": 10, "subtype": subtype},
                             read_timeout=self.status_timeout)
        listed = {_model_key(entry.get("name", "")) for entry in listing.get("files") or []}
        return [name for name in names if _model_key(name) not in listed]

    # --- generation ---

    def generate_video(self, params: dict, *, on_progress: Callable[[float], None] | None = None,
                       cancel: threading.Event | None = None,
                       on_session: Callable[[str], None] | None = None) -> GeneratedVideo:
        """Run one generation and download its video. Raises ProviderError.

        Prefers the WebSocket route for progress; falls back to the blocking HTTP route only when the
        WebSocket route is unusable before the request could start. A generation is never sent twice
        over HTTP: a lost answer is a transient error for the caller to handle, not a silent re-run.
        `on_progress` gets fractions 0..1; an exception it raises abandons the wait (the server may
        still finish the job). When `cancel` is set, the generation is interrupted in SwarmUI (running or
        still queued there) and `GenerationCancelled` raised; the blocking HTTP route cannot be cancelled.
        `on_session` hears the session a WebSocket generation runs on before it is sent, so that another
        process can interrupt it (`interrupt_session`) should this one die while SwarmUI goes on.
        """
        try:
            path, request_id = self._generate_ws(params, on_progress, cancel, on_session)
        except _WebSocketUnavailable as exc:
            log.info("SwarmUI at %s: WebSocket route unusable (%s), using HTTP", self.base_url, exc)
            path, request_id = self._generate_http(params), None
        return GeneratedVideo(path=path, video=self.download(path), request_id=request_id)

    def download(self, path: str) -> bytes:
        """Fetch an output. Paths hold spaces and prompt text; the server un-escapes them (§3.2)."""
        if path.startswith("data:"):  # `donotsave` outputs come inline
            return base64.b64decode(path.split(",", 1)[1])
        url = f"{self.base_url}/{quote(_output_path(path), safe='/')}"
        return self.http.download(url, headers=self._auth)

    def find_output(self, work_tag: str) -> tuple[str, dict] | None:
        """The saved output a generation tagged `work_tag` left (its `View/…` path and `sui_extra_data`),
        or None. `ListImages` sorted by date lists the newest files first (up to the user's
        `MaxImagesInHistory`, 1,000 by default), which holds a clip finished minutes ago."""
        listing = self._call("ListImages", {"path": "raw", "depth": OUTPUT_LIST_DEPTH, "sortBy": "Date",
                                            "sortReverse": False}, read_timeout=self.status_timeout)
        if self._outputs_prefix is None:
            return None
        for entry in listing.get("files") or []:
            extra = _extra_data(entry.get("metadata")) if isinstance(entry, dict) else None
            if extra is None or extra.get(WORK_TAG_KEY) != work_tag:
                continue
            src = entry.get("src")
            if not isinstance(src, str) or not src.lower().endswith(VIDEO_EXTENSIONS):
                continue
            return _output_path(f"{self._outputs_prefix}raw/{src}"), extra
        return None

    def _generate_http(self, params: dict) -> str:
        data = self._call("GenerateText2Image", params, read_timeout=self.generation_timeout)
        path, _ = _pick_video({str(index): (path, None) for index, path in enumerate(data.get("images") or [])})
        return path

    def _generate_ws(self, params: dict, on_progress, cancel, on_session) -> tuple[str, str | None]:
        session_id = self._borrow_session()
        try:
            try:
                return self._ws_once(params, session_id, on_progress, cancel, on_session)
            except _SessionExpired:
                session_id = self._renew_borrowed(session_id)
            try:
                return self._ws_once(params, session_id, on_progress, cancel, on_session)
            except _SessionExpired:
                raise TransientError("SwarmUI: a fresh session was refused as invalid",
                                     code="invalid_session") from None
        finally:
            self._return_session(session_id)

    def _ws_once(self, params: dict, session_id: str, on_progress, cancel, on_session=None) -> tuple[str, str | None]:
        url = self._ws_url("/API/GenerateText2ImageWS")
        try:
            sock = self._ws_socket()
            try:
                # Previews and inline (`donotsave`) results can exceed websockets' 1 MiB default.
                ws = connect(url, sock=sock, ssl=self._ssl_context, server_hostname=urlsplit(url).hostname,
                             additional_headers=self._auth, user_agent_header="genhub/1.0",
                             open_timeout=self.ws_open_timeout, close_timeout=1, max_size=128 * 2**20,
                             logger=_WS_LOGGER)
            except BaseException:
                sock.close()
                raise
        except ssl.SSLError as exc:
            # Not the pinned certificate (or no TLS at all): the handshake stopped before our token was sent.
            raise TransientError(f"SwarmUI: TLS to {self.base_url} refused: {_tls_reason(exc)}",
                                 code="tls_refused") from None
        except InvalidStatus as exc:
            if exc.response.status_code == 401:
                raise PermanentError("SwarmUI: WebSocket handshake refused with HTTP 401 (Authorization)",
                                     code="unauthorized", status=401) from None
            raise _WebSocketUnavailable(f"handshake answered HTTP {exc.response.status_code}") from None
        except TimeoutError:
            # The server accepted the connection but did not answer: hung, not a WS-less proxy.
            # Falling back would block on the HTTP route for `generation_timeout`.
            raise TransientError(f"SwarmUI: WebSocket handshake timed out after {self.ws_open_timeout}s",
                                 code="timeout") from None
        except (InvalidHandshake, OSError) as exc:
            raise _WebSocketUnavailable(type(exc).__name__) from None
        except ValueError:
            # A redirect (a proxy that dropped the Upgrade: SwarmUI sends GETs on /API/ to an error page):
            # never followed on our checked socket, and the WS route is unusable here.
            raise _WebSocketUnavailable("the handshake was redirected") from None
        with ws:
            if on_session:
                on_session(session_id)
            return self._ws_exchange(ws, {**params, "session_id": session_id}, on_progress, cancel)

    def _ws_exchange(self, ws, body: dict, on_progress, cancel=None) -> tuple[str, str | None]:
        received_any = False
        outputs: dict[str, tuple[str, str | None]] = {}  # batch index -> (path, request id)
        progress = None  # None until the first gen_progress: the moment the GPU takes this job
        poll = min(self.ws_idle_timeout, CANCEL_POLL_SECONDS) if cancel is not None else self.ws_idle_timeout
        try:
            ws.send(json.dumps(body))
            heard = time.monotonic()
            while True:
                if cancel is not None and cancel.is_set():
                    self.interrupt_session(body["session_id"])
                    raise GenerationCancelled()
                try:
                    raw = ws.recv(timeout=poll)
                except TimeoutError:
                    if time.monotonic() - heard < self.ws_idle_timeout:
                        continue
                    raise TransientError(f"SwarmUI: WebSocket silent for {self.ws_idle_timeout}s during generation",
                                         code="timeout") from None
                heard = time.monotonic()
                message = _decode(raw)
                received_any = True
                if "error" in message or "error_id" in message:
                    if message.get("error_id") == "invalid_session_id":
                        raise _SessionExpired()
                    raise _route_error("GenerateText2ImageWS", message)
                if "gen_progress" in message:
                    update = message["gen_progress"] or {}
                    value = update.get("overall_percent", update.get("current_percent"))
                    # A job's progress never goes back, whatever the workflow's stages report; the first
                    # report is relayed even at 0, since it says the generation has started.
                    if on_progress and isinstance(value, (int, float)) and (progress is None or value > progress):
                        progress = min(1.0, max(0.0, float(value)))
                        on_progress(progress)
                elif "image" in message:
                    image = message["image"]
                    if isinstance(image, dict):  # the documented nested shape; the code sends it flat (§3.3)
                        message, image = image, image.get("image")
                    outputs[str(message.get("batch_index", "0"))] = (image, message.get("request_id"))
                elif "discard_indices" in message:
                    for index in message["discard_indices"] or []:
                        outputs.pop(str(index), None)
                elif message.get("socket_intention") == "close":
                    break  # all done; SwarmUI only sends a final status before closing
        except ConnectionClosedOK:
            pass
        except ConnectionClosed:
            if not received_any:
                # SwarmUI answers a request with a status message at once, so a socket that dies
                # before any message never reached the generator: the WS route is unusable here.
                raise _WebSocketUnavailable("connection closed before any message") from None
            raise TransientError("SwarmUI: WebSocket closed during generation", code="connection_error") from None
        return _pick_video(outputs)

    def _ws_socket(self) -> socket.socket:
        """A TCP connection to the instance whose peer passed the address rule, for the WS handshake."""
        parts = urlsplit(self.base_url)
        sock = socket.create_connection((parts.hostname, parts.port or 443), timeout=self.ws_open_timeout)
        try:
            check_peer(sock.getpeername()[0], parts.hostname)
        except BaseException:
            sock.close()
            raise
        return sock

    def _ws_url(self, route: str) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + route, "", ""))

    # --- sessions and calls ---

    def _call(self, route: str, body: dict, *, read_timeout: float) -> dict:
        """POST one API route with our session, renewing it once if the server forgot it."""
        session_id = self._session()
        try:
            return self._post(route, {**body, "session_id": session_id}, read_timeout=read_timeout)
        except _SessionExpired:
            pass
        session_id = self._renew_session(session_id)
        try:
            return self._post(route, {**body, "session_id": session_id}, read_timeout=read_timeout)
        except _SessionExpired:
            raise TransientError(f"SwarmUI: {route} refused a fresh session as invalid",
                                 code="invalid_session") from None

    def _session(self) -> str:
        with self._session_lock:
            if self._session_id is None:
                self._session_id = self._new_session()
            return self._session_id

    def _borrow_session(self) -> str:
        """A session no other generation of ours is using: the main one if free, else a spare, else a new one."""
        with self._session_lock:
            if self._session_id is None:
                self._session_id = self._new_session()
            if self._session_id not in self._busy_sessions:
                chosen = self._session_id
            else:
                chosen = self._spare_sessions.pop() if self._spare_sessions else None
            if chosen:
                self._busy_sessions.add(chosen)
                return chosen
        chosen = self._new_session()
        with self._session_lock:
            self._busy_sessions.add(chosen)
        return chosen

    def _renew_borrowed(self, stale: str) -> str:
        fresh = self._renew_session(stale) if stale == self._session_id else self._new_session()
        with self._session_lock:
            self._busy_sessions.discard(stale)
            self._busy_sessions.add(fresh)
        return fresh

    def _return_session(self, session_id: str) -> None:
        with self._session_lock:
            self._busy_sessions.discard(session_id)
            if session_id != self._session_id:
                self._spare_sessions.append(session_id)

    def _renew_session(self, stale: str) -> str:
        with self._session_lock:
            if self._session_id == stale:  # another thread may have renewed it already
                self._session_id = self._new_session()
            return self._session_id

    def _new_session(self) -> str:
        # Every call persists a session row on the server (§2.1): only when we have none or it expired.
        answer = self._post("GetNewSession", {}, read_timeout=self.status_timeout)
        session_id = answer.get("session_id")
        if not session_id:
            raise TransientError("SwarmUI: GetNewSession returned no session_id", code="bad_response")
        user = answer.get("user_id")
        self._outputs_prefix = f"View/{user}/" if answer.get("output_append_user") is True \
            and isinstance(user, str) and user else None
        return session_id

    def _post(self, route: str, body: dict, *, read_timeout: float) -> dict:
        # Never repeated here: a generation whose answer was lost may still have run on the GPU, and
        # a health probe must fail fast. Job attempts and the orchestrator's thresholds own retries.
        url = f"{self.base_url}/API/{route}"
        response = self.http.request("POST", url, json=body, headers=self._auth, retry=False,
                                     read_timeout=read_timeout, ok_statuses=(401,))
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code == 401:
            if isinstance(data, dict) and data.get("error_id") == "invalid_session_id":
                raise _SessionExpired()
            # The plain-text `Unauthorized` of `Network.RequiredAuthorization` (§2.2): wrong token.
            raise PermanentError(f"SwarmUI: POST /API/{route} returned HTTP 401: the instance token was refused",
                                 code="unauthorized", status=401)
        if not isinstance(data, dict):
            raise TransientError(f"SwarmUI: POST /API/{route} answered HTTP {response.status_code} without JSON",
                                 code="bad_response", status=response.status_code)
        if "error" in data or "error_id" in data:  # HTTP 200 with an error is still a failure (§2.2)
            raise _route_error(route, data)
        return data


def _route_error(route: str, data: dict) -> ProviderError:
    text = " ".join(str(data.get("error") or data.get("error_id") or "unknown error").split())[:500]
    if text.startswith(PARAMETER_ERROR_PREFIXES):
        return PermanentError(f"SwarmUI: {route} rejected the request: {text}", code="invalid_params")
    return TransientError(f"SwarmUI: {route} failed: {text}", code="generation_failed")


def _pick_video(outputs: dict[str, tuple[str, str | None]]) -> tuple[str, str | None]:
    """The video among the outputs (path, request id): an extra still image may come first, and
    intermediate outputs carry negative batch indices (§3.3)."""
    videos = [(index, output) for index, output in outputs.items()
              if isinstance(output[0], str)
              and (output[0].lower().endswith(VIDEO_EXTENSIONS) or output[0].startswith("data:video/"))]
    if not videos:
        raise TransientError("SwarmUI: generation finished without a video output", code="no_output")
    videos.sort(key=lambda item: item[0].startswith("-"))
    return videos[0][1]


def _output_path(path) -> str:
    """An output path from SwarmUI's reply, fetched relative to the pinned base URL: `View/…` only,
    never a scheme, an absolute path, a `..` or `.` segment, a backslash or a control character."""
    problem = None
    if not isinstance(path, str) or not path.startswith("View/"):
        problem = "it is not a relative View/… path"
    elif any(segment in ("", ".", "..") for segment in path.split("/")[1:]):
        problem = "it has an empty, '.' or '..' segment"
    elif "\\" in path or any(ord(char) < 32 or ord(char) == 127 for char in path):
        problem = "it holds a backslash or a control character"
    if problem:
        shown = path[:80] if isinstance(path, str) else type(path).__name__
        raise TransientError(f"SwarmUI: refused output path {shown!r}: {problem}", code="bad_output_path")
    return path


def reported_generation_seconds(extra: dict) -> float | None:
    """`generation_time` of an output's `sui_extra_data` ("12.34 sec", or "2.50 min" past two minutes;
    src/Text2Image/T2IEngine.cs) in seconds, or None when it says something else."""
    value, _, unit = str(extra.get("generation_time", "")).partition(" ")
    try:
        seconds = float(value) * {"sec": 1, "min": 60}[unit]
    except (KeyError, ValueError):
        return None
    return seconds if 0 <= seconds < 86400 else None


def _extra_data(metadata) -> dict | None:
    """`sui_extra_data` of a listed file's metadata (a JSON text, "not guaranteed" to be one), or None."""
    try:
        parsed = json.loads(metadata) if isinstance(metadata, str) else None
    except ValueError:
        return None
    extra = parsed.get("sui_extra_data") if isinstance(parsed, dict) else None
    return extra if isinstance(extra, dict) else None


def _tls_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "its certificate is not the one genhub pinned for this instance"
    return exc.reason or type(exc).__name__


def _decode(raw) -> dict:
    try:
        message = json.loads(raw)
    except (TypeError, ValueError):
        message = None
    if not isinstance(message, dict):
        raise TransientError("SwarmUI: WebSocket sent a message that is not a JSON object", code="bad_response")
    return message


def _model_key(name: str) -> str:
    """Listed LoRAs carry `.safetensors`; requests may leave it out (§3.1 model names)."""
    return name[: -len(".safetensors")] if name.endswith(".safetensors") else name
