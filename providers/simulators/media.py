"""Real, short H.264 MP4s made from an input image, for the simulated providers.

The simulators must return files that decode and have the frame count, rate and frame size that was
asked for, so genhub's artifact checks run against real media. Clips are encoded at the full size
the real service would return, but as cheaply as possible (x264 `ultrafast`, a high CRF: tiny files,
fast encodes); each frame zooms slowly into the image.
"""

import io

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


def make_image(*, width: int = 320, height: int = 240, color=(200, 120, 40), fmt: str = "PNG") -> bytes:
    """A small test image with a gradient, so frames differ and the poster is visible."""
    image = Image.new("RGB", (width, height), color)
    for x in range(0, width, 8):
        for y in range(height):
            image.putpixel((x, y), (x % 256, y % 256, 255 - x % 256))
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()
