"""fal.ai's queue REST API (`requests`, no fal-client) and the `fal` provider built on it.

Quirks this follows (from fal's queue API docs and the fal-ai/fal client source):
- submit to `{queue}/{endpoint id}`; the status/response/cancel URLs it returns use only
  owner/alias (the endpoint path is dropped), so they are stored and used, never rebuilt;
- status answers 202 while IN_QUEUE/IN_PROGRESS and 200 once COMPLETED, and a COMPLETED request
  can still have failed (`error`, `error_type`); its result then carries the model's error status;
- 422 `detail` lists are input errors: permanent;
- the submit POST is paid and has no idempotency key: it is never repeated after the body was sent;
- output files live on a public CDN: they are fetched without our key, at once;
- only IN_PROGRESS requests count against the account's concurrency (2 on a new account); the rest
  wait IN_QUEUE with a `queue_position`, which is reported so the deadline can start at IN_PROGRESS;
- fal bills a COMPLETED request: when its result or file cannot be fetched (5xx, timeout), that is a
  `ResultFetchError` for the caller to fetch again later, never a reason to submit it again.
- its replies are untrusted input: the key goes only to FAL_QUEUE_URL's scheme, host and port (a
  reply naming any other is refused before anything is sent), and files come only from FAL_FILE_HOSTS
  over the address rule of `providers.addresses`, streamed under a size limit.
"""

import base64
import logging
from urllib.parse import urlsplit

from django.conf import settings

from providers.addresses import UntrustedAddress, check_url
from providers.base import Completed, Finished, GenerationRequest, Pending, Provider, Submitted
from providers.errors import ConfigurationError, PermanentError, ProviderError, TransientError
from providers.http import HttpClient

log = logging.getLogger(__name__)

# Request failures fal's own queue reports; they are infrastructure trouble, worth another attempt.
TRANSIENT_ERROR_TYPES = {"request_timeout", "startup_timeout", "runner_scheduling_failure",
                         "runner_connection_timeout", "runner_disconnected", "runner_connection_refused",
                         "runner_server_error", "internal_error"}


def _detail_message(body) -> str:
    """fal's error bodies: {"detail": [{"loc": [...], "msg": ...}]} or {"detail": "...", "error_type": ...}."""
    if not isinstance(body, dict):
        return str(body)[:500]
    detail = body.get("detail", body.get("error", body))
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                field = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{field}: {item.get('msg', item.get('type', 'invalid'))}" if field
                             else str(item.get("msg", item)))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)[:500]


class FalClient:
    """The four queue calls. URLs from the submit response are used as given."""

    def __init__(self, queue_url: str, key: str, *, http: HttpClient | None = None,
                 files_http: HttpClient | None = None):
        if not key:
            raise ConfigurationError("FAL_KEY is not set: genhub cannot call fal.ai")
        self.queue_url = queue_url.rstrip("/")
        self.http = http or HttpClient("fal", headers={"Authorization": f"Key {key}"})
        # Output files are on fal's public CDN, another host: our key must not travel there.
        self.files_http = files_http or HttpClient("fal CDN", read_timeout=120, public_only=True)
        queue = urlsplit(self.queue_url)
        self._queue_origin = (queue.scheme, queue.hostname, queue.port or _DEFAULT_PORTS.get(queue.scheme))

    def _keyed_url(self, url, what: str) -> str:
        """A URL from fal's reply that our key may be sent to: the configured queue's origin only."""
        try:
            parts = urlsplit(url) if isinstance(url, str) else None
            origin = parts and (parts.scheme, parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme))
        except ValueError:
            origin = None
        if origin != self._queue_origin or parts.username is not None:
            shown = f"{parts.scheme}://{parts.hostname}" if origin else "a malformed URL"
            raise UntrustedAddress(f"fal: the {what} in fal's reply points at {shown}, not at the configured "
                                   f"queue (FAL_QUEUE_URL); nothing was sent there")
        return url

    def submit(self, endpoint: str, payload: dict) -> dict:
        response = self.http.request("POST", f"{self.queue_url}/{endpoint.strip('/')}", json=payload,
                                     idempotent=False)
        data = response.json()
        missing = [key for key in ("request_id", "status_url", "response_url", "cancel_url") if not data.get(key)]
        if missing:
            raise TransientError(f"fal: submit response lacks {', '.join(missing)}", code="bad_response")
        for key in ("status_url", "response_url", "cancel_url"):
            self._keyed_url(data[key], key)
        return data

    def status(self, status_url: str) -> dict:
        return self.http.request("GET", self._keyed_url(status_url, "status_url"), params={"logs": 0},
                                 ok_statuses=(202,)).json()

    def result(self, response_url: str, *, retry: bool = True) -> dict:
        """The model's output; a failed request answers with the model's own error status and body."""
        response = self.http.request("GET", self._keyed_url(response_url, "response_url"), ok_statuses=(400, 422),
                                     retry=retry)
        body = _json_or_text(response)
        if response.status_code in (400, 422):
            raise PermanentError(f"fal rejected the input: {_detail_message(body)}", code="invalid_input",
                                 status=response.status_code)
        return body

    def cancel(self, cancel_url: str) -> str:
        response = self.http.request("PUT", self._keyed_url(cancel_url, "cancel_url"), ok_statuses=(400, 404))
        return str(_json_or_text(response).get("status", response.status_code)) if response.content else ""

    def download(self, url: str, *, retry: bool = True) -> bytes:
        check_url(url, what="fal: the video URL in fal's result", allowed_hosts=settings.FAL_FILE_HOSTS)
        return self.files_http.download(url, retry=retry)


_DEFAULT_PORTS = {"https": 443, "http": 80}


def _json_or_text(response):
    try:
        return response.json()
    except ValueError:
        return {"detail": response.text[:500]}


class ResultFetchError(TransientError):
    """fal completed (and bills) the request, but its result or file could not be fetched this time."""

    def __init__(self, message: str):
        super().__init__(message, code="result_fetch_failed", transport=True)


class FalProvider(Provider):
    name = "fal"
    polled = True
    # fal's A14B endpoint takes `resolution` and `aspect_ratio: "auto"`, not a width and height.
    renders_requested_size = False

    def __init__(self, client: FalClient | None = None, endpoint: str | None = None):
        self._client = client
        self.endpoint = endpoint or settings.FAL_ENDPOINT

    @property
    def client(self) -> FalClient:
        # Built on first use so a missing key fails the job with a clear message, not the import.
        if self._client is None:
            self._client = FalClient(settings.FAL_QUEUE_URL, settings.FAL_KEY)
        return self._client

    def capacity(self) -> int:
        return settings.FAL_MAX_IN_FLIGHT

    def poll_interval(self) -> float:
        return settings.FAL_POLL_INTERVAL

    @staticmethod
    def payload(request: GenerationRequest) -> dict:
        """The Wan 2.2 A14B image-to-video input (fal schema); the image goes inline as a data URI."""
        params = request.params
        image = base64.b64encode(request.image).decode()
        payload = {
            "image_url": f"data:{request.image_content_type};base64,{image}",
            "prompt": request.prompt,
            "num_frames": params["num_frames"],
            "frames_per_second": params["fps"],
            "resolution": params["resolution"],
            "aspect_ratio": "auto",
            "num_inference_steps": params["steps"],
            "guidance_scale": params["cfg"],
            "seed": request.seed,
            # No frame interpolation, said in all three fields: fal's defaults (film, 1 interpolated
            # frame, fps adjusted) would return about twice the frames at twice the rate. With these
            # the clip has exactly the frames and rate asked for, which the output check and the
            # price (per 16-fps second) assume.
            "interpolator_model": "none",
            "num_interpolated_frames": 0,
            "adjust_fps_for_interpolation": False,
            "enable_safety_checker": True,
        }
        if request.negative_prompt:
            payload["negative_prompt"] = request.negative_prompt
        return payload

    def submit(self, request: GenerationRequest, *, on_progress=None, placement=None) -> Submitted:
        data = self.client.submit(self.endpoint, self.payload(request))
        ref = {key: data[key] for key in ("request_id", "status_url", "response_url", "cancel_url")}
        return Submitted(ref=ref, external_id=data["request_id"])

    def check(self, ref: dict, *, collect: bool = True) -> Pending | Completed | Finished:
        status = self.client.status(ref["status_url"])
        state = status.get("status")
        if state == "IN_QUEUE":
            position = status.get("queue_position")
            position = position if isinstance(position, int) and position >= 0 else None
            return Pending(progress=0.0, queue_position=position,
                           detail=f"queued at fal (position {position})" if position is not None else "queued at fal")
        if state == "IN_PROGRESS":
            return Pending(detail="generating at fal", started=True)
        if state != "COMPLETED":
            raise TransientError(f"fal reported an unknown status {state!r}", code="bad_response")
        if status.get("error") or status.get("error_type"):
            raise self._completed_with_error(ref, status)
        completed = Completed(status=status)
        return self.collect(ref, completed) if collect else completed

    def collect(self, ref: dict, completed: Completed) -> Finished:
        # One try per check: the caller spaces the next one out (the request is done and billed, so
        # there is no hurry and nothing to resubmit).
        status = completed.status
        try:
            result = self.client.result(ref["response_url"], retry=False)
        except ProviderError as exc:
            if exc.transport:
                raise ResultFetchError(f"fal completed the request but its result could not be fetched: {exc}") from exc
            raise
        video = (result or {}).get("video") or {}
        if not video.get("url"):
            raise TransientError("fal completed without a video URL", code="bad_response")
        source = {"video_url": video["url"]}
        return Finished(
            video=self.fetch_output(source, retry=False), content_type=video.get("content_type") or "video/mp4",
            meta={"seed": result.get("seed"), "inference_time": (status.get("metrics") or {}).get("inference_time")},
            source=source,
        )

    def fetch_output(self, source: dict, *, retry: bool = True) -> bytes:
        """The clip from fal's CDN (kept there at least 7 days), without our key."""
        try:
            return self.client.download(source["video_url"], retry=retry)
        except ProviderError as exc:
            if exc.transport:
                raise ResultFetchError(f"fal completed the request but its video could not be fetched: {exc}") from exc
            raise

    def _completed_with_error(self, ref: dict, status: dict) -> ProviderError:
        """A COMPLETED request that failed: its result holds the model's error (422 → input error)."""
        error_type = status.get("error_type") or ""
        try:
            self.client.result(ref["response_url"])
        except PermanentError as exc:
            return exc
        except ProviderError:
            pass  # the status already says it failed; its own words follow
        message = f"fal: {status.get('error') or 'request failed'}" + (f" ({error_type})" if error_type else "")
        if error_type and error_type not in TRANSIENT_ERROR_TYPES and error_type.startswith("content_policy"):
            return PermanentError(message, code=error_type)
        return TransientError(message, code=error_type or "fal_error")

    def cancel(self, ref: dict) -> None:
        try:
            self.client.cancel(ref["cancel_url"])
        except (ProviderError, KeyError) as exc:
            log.warning("fal cancel of %s failed: %s", ref.get("request_id"), exc)
