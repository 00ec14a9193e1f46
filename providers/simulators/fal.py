"""A simulated fal.ai queue: the same URL shapes, status codes and bodies as the real one.

- `POST /{owner}/{alias}/{path}` submits (Key auth) and returns owner/alias-only request URLs;
  status/result URLs built with the endpoint path answer 404, as a client that rebuilds them deserves.
- status: 202 IN_QUEUE (with queue_position) → 202 IN_PROGRESS → 200 COMPLETED; a failed request
  is COMPLETED with `error`/`error_type`, and its result answers with the error's status and body.
- inputs are validated by the "runner" (after submit), as fal does: a bad input is a 422 result.
- outputs are real MP4s made from the input image, served from `/files/…` without auth (a CDN), at the
  size fal renders: the resolution's short side (480p → 480 px), the long side following the image's
  aspect (`aspect_ratio: "auto"`) or the ratio asked for, rounded to a multiple of 16. fal renders on its
  own GPUs, so a clip identical to a recent one (same image, frames, fps, size: a batch's seeds) is served
  from a bounded cache instead of being encoded again on genhub's CPU (`media.ClipCache`).
- an account's concurrency limit: at most `concurrency` requests are IN_PROGRESS at once (a new
  fal account has 2); the rest wait IN_QUEUE in submission order with a real `queue_position` (the
  requests ahead), and are never rejected for it. The queue moves by the clock, polled or not.
- frame interpolation as fal's Wan endpoint does it: unless the payload turns it off
  (`interpolator_model: "none"` or `num_interpolated_frames: 0`), fal's defaults (film, 1 frame,
  `adjust_fps_for_interpolation: true`) return (n-1)·2+1 frames at twice the asked fps.

Faults are injected with `inject(kind, count)` or `POST /_sim/faults {"kind": ..., "count": ...}`:
`submit_429`, `submit_500`, `status_503`, `result_500` (each one fails one result GET of a COMPLETED
request with a 500, as fal's gateway does), `complete_with_error`, `validation_error`, `bad_video`,
`contradicting_output` (the next request's clip has twice the frames at twice the fps, as with
interpolation on; fetched again it is the same file).
"""

import base64
import io
import re
import threading
import time
import uuid
from collections import Counter, deque

from PIL import Image

from providers.simulators.media import ClipCache, make_video
from providers.simulators.server import Simulator

FAULT_KINDS = ("submit_429", "submit_500", "status_503", "result_500", "complete_with_error",
               "validation_error", "bad_video", "contradicting_output")
REQUEST_PATH = re.compile(
    r"^/(?P<owner>[^/]+)/(?P<alias>[^/]+)/requests/(?P<id>[0-9a-f-]+)(?P<tail>/status|/cancel)?/?$")
FILE_PATH = re.compile(r"^/files/(?P<id>[0-9a-f-]+)/output\.mp4$")


class FalSimulator(Simulator):
    def __init__(self, key: str, *, port: int = 0, queue_seconds: float = 0.2, run_seconds: float = 0.5,
                 concurrency: int = 10, clip_cache: int = 32):
        super().__init__(port=port)
        self.clips = ClipCache(clip_cache)
        self.key = key
        self.queue_seconds = queue_seconds
        self.run_seconds = run_seconds
        self.concurrency = concurrency
        self.max_running = 0  # the most requests IN_PROGRESS at once so far, for assertions
        self.requests: dict[str, dict] = {}
        # The account's queue on the simulator's clock: waiting requests in submission order, the running
        # ones, and the moment up to which their starts and ends have been worked out (`_run_clock`).
        self._waiting: deque[dict] = deque()
        self._running: list[dict] = []
        self._clock = 0.0
        self.submits = Counter()  # endpoint id → number of accepted submits
        self.calls: list[tuple[str, str]] = []  # (method, path) of every call, for assertions
        self._faults = Counter()
        self._lock = threading.Lock()

    # --- control --------------------------------------------------------------------------

    def inject(self, kind: str, count: int = 1) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
        with self._lock:
            self._faults[kind] += count

    def generation_counts(self, key: str = "seed", *, completed: bool = False) -> Counter:
        """Accepted submissions (each one is billed work) per value of the payload field `key`.
        `completed=True` counts only those finished without an error, as far as the simulator has advanced
        them: a request nobody polls again stays unfinished here."""
        with self._lock:
            return Counter(r["payload"].get(key) for r in self.requests.values()
                           if not completed or (r["finished"] is not None and r["error"] is None))

    # --- protocol -------------------------------------------------------------------------

    def handle(self, request):
        path = request.path_only
        with self._lock:
            self.calls.append((request.command, path))
        if path == "/_sim/faults" and request.command == "POST":
            body = request.read_json()
            self.inject(body["kind"], int(body.get("count", 1)))
            return request.send_json(200, {"ok": True})
        if path == "/_sim/state" and request.command == "GET":
            return request.send_json(200, {"submits": dict(self.submits), "requests": len(self.requests)})
        file_match = FILE_PATH.match(path)
        if file_match and request.command == "GET":
            return self._serve_file(request, file_match["id"])
        if request.headers.get("Authorization") != f"Key {self.key}":
            request.read_body()
            return request.send_json(401, {"detail": "No user found for Key ID and Secret"})
        match = REQUEST_PATH.match(path)
        if match:
            return self._request_route(request, match)
        if request.command == "POST":
            return self._submit(request, path.strip("/"))
        request.read_body()
        return request.send_json(404, {"detail": "Not Found"})

    def _submit(self, request, endpoint: str):
        payload = request.read_json()
        if self._take_fault("submit_429"):
            return request.send_json(429, {"detail": "Too many requests"}, headers={"Retry-After": "1"})
        if self._take_fault("submit_500"):
            return request.send_json(500, {"detail": "Internal server error"})
        parts = endpoint.split("/")
        if len(parts) < 2:
            return request.send_json(404, {"detail": f"Application '{endpoint}' not found"})
        request_id = str(uuid.uuid4())
        base = f"{self.url}/{parts[0]}/{parts[1]}/requests/{request_id}"
        record = {
            "id": request_id, "owner": parts[0], "alias": parts[1], "endpoint": endpoint, "payload": payload,
            "submitted": time.monotonic(), "started": None, "finished": None, "cancelled": False,
            "error": None, "video": None,
        }
        if self._take_fault("validation_error"):
            record["error"] = (422, {"detail": [{"loc": ["body", "image_url"], "msg": "Unsupported image",
                                                 "type": "value_error"}]}, "Invalid status code: 422", None)
        elif self._take_fault("complete_with_error"):
            record["error"] = (503, {"detail": "Runner disconnected", "error_type": "runner_disconnected"},
                               "Runner disconnected", "runner_disconnected")
        record["bad_video"] = self._take_fault("bad_video")
        record["contradicting"] = self._take_fault("contradicting_output")
        with self._lock:
            record["submitted"] = time.monotonic()  # under the lock: submission order is queue order
            self.requests[request_id] = record
            self._waiting.append(record)
            self.submits[endpoint] += 1
        return request.send_json(200, {
            "status": "IN_QUEUE", "request_id": request_id, "response_url": base,
            "status_url": f"{base}/status", "cancel_url": f"{base}/cancel", "queue_position": self._position(record),
        })

    def _advance(self, record: dict) -> str:
        """Moves every request along its life by the clock (the queue moves whoever polls); returns
        `record`'s fal status."""
        with self._lock:
            self._run_clock(time.monotonic())
        if record["finished"] is not None:
            return "COMPLETED"
        return "IN_PROGRESS" if record["started"] else "IN_QUEUE"

    def _run_clock(self, now: float) -> None:
        """Works out every start and end up to `now` at the moments they happened, not at the moment
        someone asks: fal's runners take the next request as soon as a slot frees and its queue time is
        over, polled or not. So a request starts at max(submitted + queue_seconds, the moment a slot freed)
        and ends run_seconds later; a slot freed at an instant goes to the next in line first (FIFO).
        A cancelled request (`finished` set by the cancel route) frees its slot or leaves the line."""
        running = [r for r in self._running if r["finished"] is None]
        waiting = self._waiting
        at = self._clock
        while True:
            while waiting and waiting[0]["finished"] is not None:
                waiting.popleft()
            first_done = min(running, key=lambda r: r["started"]) if running else None
            end_at = first_done["started"] + self.run_seconds if first_done else float("inf")
            start_at = float("inf")
            if waiting and len(running) < self.concurrency:
                start_at = max(waiting[0]["submitted"] + self.queue_seconds, at)
            at = min(end_at, start_at)
            if at > now:
                break
            if end_at <= start_at:  # ends first, so a slot freed now goes to the next in line
                running.remove(first_done)
                first_done["finished"] = end_at
                if first_done["error"] is None:
                    first_done["error"] = self._runner_validate(first_done["payload"])
            else:
                started = waiting.popleft()
                started["started"] = start_at
                running.append(started)
                self.max_running = max(self.max_running, len(running))
        self._running = running
        self._clock = now

    @staticmethod
    def _runner_validate(payload: dict):
        """What the Wan runner checks; fal validates on the runner, so errors arrive as a 422 result."""
        problems = []
        if not str(payload.get("prompt") or "").strip():
            problems.append({"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"})
        if not str(payload.get("image_url") or "").startswith(("data:image/", "https://")):
            problems.append({"loc": ["body", "image_url"], "msg": "invalid image URL", "type": "value_error"})
        frames = payload.get("num_frames", 81)
        if not isinstance(frames, int) or not 17 <= frames <= 161:
            problems.append({"loc": ["body", "num_frames"], "msg": "ensure this value is between 17 and 161",
                             "type": "value_error"})
        if problems:
            return 422, {"detail": problems}, "Invalid status code: 422", None
        return None

    def _request_route(self, request, match):
        request.read_body()
        record = self.requests.get(match["id"])
        if record is None or (record["owner"], record["alias"]) != (match["owner"], match["alias"]):
            return request.send_json(404, {"detail": "Request not found"})
        tail = match["tail"]
        if tail == "/cancel" and request.command == "PUT":
            state = self._advance(record)
            if state == "COMPLETED":
                return request.send_json(400, {"status": "ALREADY_COMPLETED"})
            with self._lock:
                record["cancelled"] = True
                record["finished"] = time.monotonic()
                record["error"] = (499, {"detail": "Request cancelled by the client."}, "Request cancelled",
                                   "client_cancelled")
            return request.send_json(202, {"status": "CANCELLATION_REQUESTED"})
        if tail == "/status" and request.command == "GET":
            if self._take_fault("status_503"):
                return request.send_json(503, {"detail": "Service temporarily unavailable"})
            state = self._advance(record)
            urls = {"request_id": record["id"], "response_url": f"{self.url}/{record['owner']}/{record['alias']}"
                                                                  f"/requests/{record['id']}"}
            if state == "IN_QUEUE":
                return request.send_json(202, {"status": state, "queue_position": self._position(record), **urls})
            if state == "IN_PROGRESS":
                return request.send_json(202, {"status": state, "logs": None, **urls})
            body = {"status": state, "logs": None, "metrics": {"inference_time": self.run_seconds}, **urls}
            if record["error"]:
                body.update(error=record["error"][2], error_type=record["error"][3])
            return request.send_json(200, body)
        if tail is None and request.command == "GET":
            if self._advance(record) != "COMPLETED":
                return request.send_json(400, {"detail": "Request is still in progress"})
            if self._take_fault("result_500"):
                return request.send_json(500, {"detail": "Internal server error"})
            record["fetched"] = True
            if record["error"]:
                status, body = record["error"][:2]
                headers = {"X-Fal-Error-Type": record["error"][3]} if record["error"][3] else {}
                return request.send_json(status, body, headers={"x-fal-request-id": record["id"], **headers})
            return request.send_json(200, {
                "video": {"url": f"{self.url}/files/{record['id']}/output.mp4", "content_type": "video/mp4",
                          "file_name": "output.mp4"},
                "seed": record["payload"].get("seed"), "prompt": record["payload"].get("prompt", ""),
            })
        return request.send_json(405, {"detail": "Method Not Allowed"})

    def _position(self, record: dict) -> int:
        with self._lock:
            return sum(1 for r in self._waiting
                       if r["finished"] is None and r["submitted"] < record["submitted"])

    def _serve_file(self, request, request_id: str):
        record = self.requests.get(request_id)
        if not record or record["finished"] is None or record["error"]:
            return request.send_json(404, {"detail": "File not found"})
        if record["video"] is None:
            # Outside the simulator's lock; the clip cache encodes a clip once however many ask at once.
            if record["bad_video"]:
                record["video"] = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 512  # an MP4 header, no video
            else:
                image, shape = self._clip(record["payload"], interpolate=record["contradicting"])
                record["video"] = self.clips.video(image, **shape)
        return request.send_bytes(200, record["video"], "video/mp4")

    @staticmethod
    def _render(payload: dict, *, interpolate: bool = False) -> bytes:
        image, shape = FalSimulator._clip(payload, interpolate=interpolate)
        return make_video(image, **shape)

    @staticmethod
    def _clip(payload: dict, *, interpolate: bool = False) -> tuple[bytes, dict]:
        """(image bytes, make_video's frames/fps/width/height) of the clip fal would return for `payload`."""
        image = base64.b64decode(payload["image_url"].split(",", 1)[1])
        frames, fps = payload.get("num_frames", 81), payload.get("frames_per_second", 16)
        extra = 1 if interpolate else payload.get("num_interpolated_frames", 1)
        if interpolate or (payload.get("interpolator_model", "film") != "none" and extra > 0):
            frames = (frames - 1) * (extra + 1) + 1
            if interpolate or payload.get("adjust_fps_for_interpolation", True):
                fps = fps * (extra + 1)
        width, height = output_size(image, payload.get("resolution", "720p"), payload.get("aspect_ratio", "auto"))
        return image, {"frames": frames, "fps": fps, "width": width, "height": height}


def output_size(image: bytes, resolution: str, aspect_ratio: str) -> tuple[int, int]:
    """Frame size for a resolution ("480p") and aspect ("auto" follows the image, else "16:9", "9:16", "1:1")."""
    short = int(resolution.rstrip("p"))
    if aspect_ratio == "auto":
        img_w, img_h = Image.open(io.BytesIO(image)).size
    else:
        img_w, img_h = (int(part) for part in aspect_ratio.split(":"))
    long = round(short * max(img_w, img_h) / min(img_w, img_h) / 16) * 16
    return (long, short) if img_w >= img_h else (short, long)
