"""Real, short H.264 MP4s made from an input image, for the simulated providers.

The simulators must return files that decode and have the frame count and rate that was asked
for, so genhub's artifact checks run against real media. Frames are small (the longest side is
at most `max_side`) to keep the simulators fast; each frame zooms slowly into the image.
"""

import io

import av
from PIL import Image


def make_video(image_bytes: bytes, *, frames: int, fps: int, max_side: int = 160) -> bytes:
    source = Image.open(io.BytesIO(image_bytes)).convert("RGB")
    source.thumbnail((max_side, max_side))
    # H.264 with yuv420p needs even dimensions.
    width, height = max(2, source.width // 2 * 2), max(2, source.height // 2 * 2)
    source = source.resize((width, height))

    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        for index in range(frames):
            zoom = 1 + 0.15 * index / max(1, frames - 1)
            crop_w, crop_h = width / zoom, height / zoom
            left, top = (width - crop_w) / 2, (height - crop_h) / 2
            frame_image = source.resize((width, height), box=(left, top, left + crop_w, top + crop_h))
            for packet in stream.encode(av.VideoFrame.from_image(frame_image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def make_image(*, width: int = 320, height: int = 240, color=(200, 120, 40), fmt: str = "PNG") -> bytes:
    """A small test image with a gradient, so frames differ and the poster is visible."""
    image = Image.new("RGB", (width, height), color)
    for x in range(0, width, 8):
        for y in range(height):
            image.putpixel((x, y), (x % 256, y % 256, 255 - x % 256))
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()
