"""Output videos: check what the provider returned, keep it, and make a poster frame.

Provider URLs expire, so the file is fetched at once and stored. A file that does not decode is a
retryable failure; a clip that decodes but contradicts the request (its fps or frame count) is an
`OutputMismatchError`, which the caller confirms once and then fails for good (generating it again
would pay for the same contradiction). Neither is ever a success.
"""

import io
import uuid
from dataclasses import dataclass

import av
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from genhub import storage
from providers.errors import TransientError


class VideoCheckError(TransientError):
    def __init__(self, message: str):
        super().__init__(message, code="bad_output")


class OutputMismatchError(VideoCheckError):
    """The clip decodes, but its frame count or rate is not what was asked for."""


@dataclass(frozen=True)
class VideoFacts:
    frames: int
    fps: float
    duration: float
    codec: str
    width: int
    height: int
    poster_jpeg: bytes


def inspect_video(data: bytes) -> VideoFacts:
    """Decodes every frame (a truncated file fails here, not in the user's player)."""
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise VideoCheckError("the output has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            frames, poster = 0, None
            for frame in container.decode(stream):
                if poster is None:
                    buf = io.BytesIO()
                    frame.to_image().save(buf, format="JPEG", quality=85)
                    poster = buf.getvalue()
                frames += 1
            codec, width, height = stream.codec_context.name, stream.codec_context.width, stream.codec_context.height
    except av.FFmpegError as exc:
        raise VideoCheckError(f"the output video does not decode: {exc}") from exc
    if not frames or not fps:
        raise VideoCheckError("the output video has no frames")
    return VideoFacts(frames, fps, frames / fps, codec, width, height, poster)


def check_matches_request(facts: VideoFacts, params: dict, *, exact_size: bool = True) -> None:
    """The clip is the one asked for: frame count, length and frame size.

    A backend that renders at the requested width × height (SwarmUI) may round each side (to a multiple
    of 16 or 8); one that only takes a resolution (fal) chooses the size itself, so only the aspect ratio
    — which follows the input image — is held to the request.
    """
    want_frames, want_fps = params["num_frames"], params["fps"]
    want_seconds = want_frames / want_fps
    if abs(facts.frames - want_frames) > settings.GENHUB_VIDEO_FRAME_TOLERANCE or abs(facts.fps - want_fps) > 0.5:
        raise OutputMismatchError(f"the output has {facts.frames} frames at {facts.fps:g} fps; "
                                  f"{want_frames} frames at {want_fps} fps were asked for")
    if abs(facts.duration - want_seconds) > settings.GENHUB_VIDEO_DURATION_TOLERANCE:
        raise OutputMismatchError(f"the output lasts {facts.duration:.2f}s, {want_seconds:.2f}s was asked for")
    if params.get("width") and params.get("height"):
        _check_frame_size(facts, params["width"], params["height"], exact_size=exact_size)


def _check_frame_size(facts: VideoFacts, want_w: int, want_h: int, *, exact_size: bool) -> None:
    got = f"{facts.width}×{facts.height}"
    if exact_size:
        slack = settings.GENHUB_VIDEO_SIZE_TOLERANCE_PX
        if abs(facts.width - want_w) > slack or abs(facts.height - want_h) > slack:
            raise OutputMismatchError(f"the output is {got} pixels, {want_w}×{want_h} was asked for")
        return
    got_ratio, want_ratio = facts.width / facts.height, want_w / want_h
    if abs(got_ratio / want_ratio - 1) > settings.GENHUB_VIDEO_ASPECT_TOLERANCE:
        raise OutputMismatchError(f"the output is {got} pixels (aspect {got_ratio:.2f}), the request's aspect is "
                                  f"{want_ratio:.2f} ({want_w}×{want_h})")


def store_output(*, job_uuid: str, video: bytes, facts: VideoFacts) -> tuple[str, str]:
    """Saves the video and its poster; returns their storage names.

    All or nothing: when either write fails (a full disk stops it halfway), whatever was written is
    removed before the error goes up, so no partial file is left behind.
    """
    video_name = _save_whole(f"outputs/{job_uuid}.mp4", video)
    try:
        poster_name = _save_whole(f"posters/{job_uuid}.jpg", facts.poster_jpeg)
    except BaseException:
        discard(video_name)
        raise
    return video_name, poster_name


def _save_whole(name: str, data: bytes) -> str:
    """Stores `data` and confirms it is there, whole, before the caller may call the job a success.

    `save` returns only once the write finished (on S3: the PUT or multipart upload completed); the size
    read back afterwards (a HEAD on S3) proves the object is in storage with every byte.
    """
    if storage.is_object_storage():
        # S3 has no create-if-absent that every S3-compatible server honours: two holders of one job (a
        # requeued job whose first worker still runs) could both find the name free and write the same key,
        # and the loser's discard would delete the winner's clip. A key of its own per write rules that out.
        stem, extension = name.rsplit(".", 1)
        name = f"{stem}-{uuid.uuid4().hex[:12]}.{extension}"
    # The name is chosen first so a failed write knows which file it left behind.
    name = default_storage.get_available_name(name)
    try:
        name = default_storage.save(name, ContentFile(data))
        stored = default_storage.size(name)
        if stored != len(data):
            raise OSError(f"storage holds {stored} bytes of {name}, {len(data)} were written")
        return name
    except BaseException:
        try:
            discard(name)
        except Exception:  # noqa: BLE001 - an OSError on disk, a botocore error on S3: the write's matters
            pass
        raise


def discard(*names: str) -> None:
    for name in names:
        if name:
            default_storage.delete(name)
