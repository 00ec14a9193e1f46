"""Real, short H.264 MP4s made from an input image, for the simulated providers.

The simulators must return files that decode and have the frame count, rate and frame size that was
asked for, so genhub's artifact checks run against real media. Clips are encoded at the full size
the real service would return, but as cheaply as possible (x264 `ultrafast`, a high CRF: tiny files,
fast encodes); each frame zooms slowly into the image.
"""

import hashlib
import io
import threading
from collections import OrderedDict

import av
from PIL import Image, ImageOps

# x264 at its fastest and a constant quality far below what a person would keep: the test suite
# encodes hundreds of clips, and what matters is their shape, not how they look.
FAST_ENCODE = {"preset": "ultrafast", "tune": "zerolatency", "crf": "42"}


def make_video(image_bytes: bytes, *, frames: int, fps: int, width: int, height: int) -> bytes:
    """A `width` × `height` clip of the image, resized and centre-cropped to fill the frame (as fal does)."""
    # H.264 with yuv420p needs even dimensions.
    width, height = max(2, width // 2 * 2), max(2, height // 2 * 2)
    source = ImageOps.fit(Image.open(io.BytesIO(image_bytes)).convert("RGB"), (width, height))

    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = FAST_ENCODE
        for index in range(frames):
            zoom = 1 + 0.15 * index / max(1, frames - 1)
            crop_w, crop_h = width / zoom, height / zoom
            left, top = (width - crop_w) / 2, (height - crop_h) / 2
            frame_image = source.resize((width, height), box=(left, top, left + crop_w, top + crop_h),
                                        resample=Image.Resampling.NEAREST)
            for packet in stream.encode(av.VideoFrame.from_image(frame_image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


class ClipCache:
    """`make_video`, remembered for the last `size` distinct clips.

    A real provider renders on its own GPUs; a simulator encoding every clip on the machine that also runs
    genhub takes CPU from genhub and skews any timing measured against it. A batch sends the same image
    with many seeds, and the simulated clip does not depend on the seed, so most renders are repeats.
    The key is every argument of `make_video` — the image's bytes (by hash), frames, fps, width, height —
    which is everything the bytes depend on (x264 with fixed options is deterministic); interpolation and a
    contradicting output are in it through the frames and fps they produce. Bounded (LRU): a batch of
    distinct images must not keep every clip it ever rendered in memory."""

    def __init__(self, size: int = 32):
        self.size = size
        self.renders = 0  # clips actually encoded, for assertions
        self._clips: OrderedDict[tuple, bytes] = OrderedDict()
        self._rendering: dict[tuple, threading.Lock] = {}  # a lock per clip being encoded
        self._lock = threading.Lock()

    def video(self, image_bytes: bytes, *, frames: int, fps: int, width: int, height: int) -> bytes:
        key = (hashlib.sha256(image_bytes).digest(), frames, fps, width, height)
        with self._lock:
            if (clip := self._hit(key)) is not None:
                return clip
            rendering = self._rendering.setdefault(key, threading.Lock())
        # One encode per clip: a batch's seeds of one image complete together and are downloaded at once,
        # and each would otherwise encode the same clip. Other clips are encoded meanwhile (no global lock).
        with rendering:
            with self._lock:
                if (clip := self._hit(key)) is not None:
                    return clip
            clip = make_video(image_bytes, frames=frames, fps=fps, width=width, height=height)
            with self._lock:
                self.renders += 1
                self._clips[key] = clip
                while len(self._clips) > self.size:
                    self._clips.popitem(last=False)
                self._rendering.pop(key, None)
        return clip

    def _hit(self, key: tuple) -> bytes | None:
        clip = self._clips.get(key)
        if clip is not None:
            self._clips.move_to_end(key)
        return clip

    def __len__(self) -> int:
        return len(self._clips)


def make_image(*, width: int = 320, height: int = 240, color=(200, 120, 40), fmt: str = "PNG") -> bytes:
    """A small test image with a gradient, so frames differ and the poster is visible."""
    image = Image.new("RGB", (width, height), color)
    for x in range(0, width, 8):
        for y in range(height):
            image.putpixel((x, y), (x % 256, y % 256, 255 - x % 256))
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()
