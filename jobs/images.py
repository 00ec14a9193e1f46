"""Input images: what genhub accepts, decoded in full at intake, and stored the way they are shown."""

import hashlib
import io
from dataclasses import dataclass

from django.conf import settings
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from jobs.uploaded import Spool, UploadedFile

IMAGE_FORMATS = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg"), "WEBP": ("image/webp", "webp")}
EXIF_ORIENTATION = 0x0112
# A truncated file must fail to decode here, not be padded with grey and sent (Pillow's default is
# already False; it is a process-wide switch, so say it where the decision is made).
ImageFile.LOAD_TRUNCATED_IMAGES = False
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


@dataclass
class InputImage:
    name: str
    source: UploadedFile  # the bytes to store and send: the upload, or its re-oriented copy
    sha256: str
    content_type: str
    extension: str
    width: int  # as shown, i.e. after its EXIF orientation
    height: int

    @property
    def data(self) -> bytes:
        return self.source.read()


def check_image(upload: UploadedFile, spool: Spool | None = None) -> tuple[InputImage | None, str | None]:
    """Returns (image, None) or (None, reason). The pixels are decoded, not just the header read."""
    limit = settings.GENHUB_MAX_IMAGE_BYTES
    if upload.size > limit:
        return None, f"too large: {upload.size} bytes, the limit is {limit} bytes"
    if not upload.size:
        return None, "empty file"
    data = upload.read()
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format
            image.verify()  # structure and checksums; it does not decode the pixels
    except DECODE_ERRORS:
        return None, "not an image (PNG, JPEG or WebP expected)"
    if image_format not in IMAGE_FORMATS:
        return None, f"unsupported image format {image_format}; use PNG, JPEG or WebP"
    try:
        # verify() leaves the image unusable: decode a fresh open. Sides are checked on the header
        # first, so a huge canvas is refused before its pixels are allocated.
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            low, high = settings.GENHUB_MIN_IMAGE_SIDE, settings.GENHUB_MAX_IMAGE_SIDE
            if min(width, height) < low or max(width, height) > high:
                return None, f"{width}×{height} pixels; each side must be between {low} and {high}"
            image.load()
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
            if isinstance(orientation, int) and 2 <= orientation <= 8:  # 1: as stored; others are junk
                data = _reoriented(image, image_format)
                if len(data) > limit:
                    return None, (f"too large once turned the way its EXIF orientation says: {len(data)} bytes, "
                                  f"the limit is {limit} bytes")
                upload = spool.add_bytes(upload.name, data) if spool else UploadedFile(upload.name, data)
                width, height = _shown_size(width, height, orientation)
    except DECODE_ERRORS as exc:
        return None, f"the image data does not decode (truncated or corrupt): {exc}"
    content_type, extension = IMAGE_FORMATS[image_format]
    return InputImage(upload.name, upload, hashlib.sha256(data).hexdigest(), content_type, extension,
                      width, height), None


def _shown_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """Orientations 5–8 turn the picture by 90°: it is shown with its sides swapped."""
    return (height, width) if orientation >= 5 else (width, height)


def _reoriented(image: Image.Image, image_format: str) -> bytes:
    """The pixels turned the way the camera's EXIF orientation says, orientation tag removed.

    Providers and the output size must see the picture as the user sees it; not every consumer
    honours the tag, and one that did would turn a stored, already-turned copy a second time.
    """
    turned = ImageOps.exif_transpose(image)
    options = {"icc_profile": image.info.get("icc_profile")}
    if image_format in ("JPEG", "WEBP"):
        options["quality"] = 95  # one careful re-encode; the turn itself is lossless in pixels
    exif = turned.getexif()
    exif.pop(EXIF_ORIENTATION, None)
    buffer = io.BytesIO()
    turned.save(buffer, format=image_format, exif=exif.tobytes(), **{k: v for k, v in options.items() if v})
    return buffer.getvalue()
