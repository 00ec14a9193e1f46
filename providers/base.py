"""The interface every generation backend implements, and the values that cross it.

A provider never imports `jobs`: it is handed a `GenerationRequest` built from the job and
returns plain results. Two shapes of backend exist:

- polled (`polled = True`, fal): `submit` hands the work over and returns a `Submitted` reference at
  once; one poller later calls `check` for every reference in flight.
- blocking (vastai): `submit` runs the generation to the end in the calling worker, reporting
  progress through `on_progress`, and returns `Finished`.
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from providers.errors import PermanentError


@dataclass(frozen=True)
class GenerationRequest:
    job_id: str  # the job's public UUID, for logs and remote metadata
    image: bytes
    image_content_type: str
    prompt: str
    negative_prompt: str
    seed: int
    params: dict  # validated generation parameters (num_frames, fps, resolution, width, height, steps, cfg)
    # Blocking providers: what this attempt's remote work is tagged with, and the remote work of an earlier
    # attempt whose worker was lost (its reference), whose output, if it was finished, is taken instead of
    # generating the clip again.
    work_tag: str = ""
    earlier_work: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Submitted:
    """The remote accepted the work; `ref` is everything needed to follow, fetch or cancel it."""

    ref: dict
    external_id: str


@dataclass(frozen=True)
class Pending:
    progress: float | None = None  # 0..1 when the remote reports it
    detail: str = ""
    started: bool = False  # the remote is working on it (fal: IN_PROGRESS), not waiting in its own queue
    queue_position: int | None = None  # requests ahead of it in the remote's queue, when it says


@dataclass(frozen=True)
class Completed:
    """A polled request the remote has finished (its slot there is free again) whose output is not
    collected yet: `check(ref, collect=False)` answers it, `collect(ref, completed)` fetches the output."""

    status: dict = field(default_factory=dict)


@dataclass
class Finished:
    video: bytes
    content_type: str = "video/mp4"
    meta: dict = field(default_factory=dict)  # provider facts worth keeping (seed used, inference time, …)
    # Where the remote still serves this output (fal: its CDN URL), so a clip genhub could not store can
    # be fetched again instead of generated again. Empty when the output cannot be fetched twice.
    source: dict = field(default_factory=dict)


ProgressCallback = Callable[[float], None]


class Provider:
    name: str = ""
    polled: bool = False
    # True when the backend renders at the request's width × height (SwarmUI); False when it only takes a
    # resolution and follows the image's aspect (fal), so the output check compares the aspect ratio only.
    renders_requested_size: bool = True

    def submit(self, request: GenerationRequest, *, on_progress: ProgressCallback | None = None,
               placement: dict | None = None, cancel: threading.Event | None = None,
               on_remote: Callable[[dict], None] | None = None) -> "Submitted | Finished":
        """Blocking providers stop the work (and raise) once `cancel` is set; polled ones are cancelled
        through `cancel(ref)` and never get it. Blocking providers tell `on_remote` the reference of the
        work before they send it, so that `cancel(ref)` from another process can stop it if this one dies."""
        raise NotImplementedError

    def placement(self) -> dict:
        """Blocking providers: where the next job will run ({"instance_id": …}), recorded on the job
        before it starts. Raises ProviderError when there is nowhere to run it."""
        return {}

    def check(self, ref: dict, *, collect: bool = True) -> "Pending | Completed | Finished":
        """Follow one submitted request. Raises ProviderError when it failed. With `collect=False` a
        finished request answers `Completed` without fetching its output yet (a poller frees the slot
        before it spends time on the clip)."""
        raise NotImplementedError

    def collect(self, ref: dict, completed: "Completed") -> "Finished":
        """The output of a request `check(…, collect=False)` found completed."""
        raise NotImplementedError

    def cancel(self, ref: dict) -> None:
        """Best effort: ask the remote to stop work we no longer want."""

    def fetch_output(self, source: dict) -> bytes:
        """The output a `Finished.source` points at, fetched again (no new generation, nothing billed)."""
        raise PermanentError(f"{self.name} outputs cannot be fetched again", code="no_refetch")

    def capacity(self) -> int | None:
        """How many jobs may be in flight now; None when no backend is ready (jobs wait for a GPU)."""
        raise NotImplementedError

    def poll_interval(self) -> float:
        """Seconds between the pump's passes."""
        return 1.0
