"""Turns an uploaded bulk request into validated batch items, or one error listing every problem.

Nothing here writes to the database or storage: a rejected request changes nothing.
"""

import csv
import hashlib
import io
import json
import posixpath
import random
import zipfile
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from django.conf import settings
from PIL import Image, UnidentifiedImageError

from jobs import params as gen_params
from jobs.models import BatchRun, Provider

IMAGE_FORMATS = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg"), "WEBP": ("image/webp", "webp")}
ROW_FIELDS = ("file", "prompt", "negative_prompt", "seed")


class BatchValidationError(Exception):
    def __init__(self, errors: list[dict]):
        super().__init__(f"{len(errors)} problem(s) in the batch")
        self.errors = errors


@dataclass
class InputImage:
    name: str
    data: bytes
    sha256: str
    content_type: str
    extension: str
    width: int
    height: int


@dataclass
class ItemSpec:
    image: InputImage
    prompt: str
    negative_prompt: str
    seed: int
    params: dict


@dataclass
class BatchSpec:
    provider: str
    name: str
    preset: str
    params: dict
    items: list[ItemSpec] = field(default_factory=list)
    budget_usd: Decimal | None = None
    fallback_policy: str = BatchRun.Fallback.NEVER
    fallback_after: int | None = None


@dataclass
class UploadedFile:
    name: str
    data: bytes


def _error(field_name: str, message: str, item: str | None = None) -> dict:
    error = {"field": field_name, "message": message}
    if item is not None:
        error["item"] = item
    return error


def check_image(upload: UploadedFile) -> tuple[InputImage | None, str | None]:
    """Returns (image, None) or (None, reason)."""
    if len(upload.data) > settings.GENHUB_MAX_IMAGE_BYTES:
        return None, (f"too large: {len(upload.data)} bytes, the limit is "
                      f"{settings.GENHUB_MAX_IMAGE_BYTES} bytes")
    if not upload.data:
        return None, "empty file"
    try:
        with Image.open(io.BytesIO(upload.data)) as image:
            image_format = image.format
            width, height = image.size
            image.verify()  # catches truncated and corrupt files, not just bad headers
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None, "not an image (PNG, JPEG or WebP expected)"
    if image_format not in IMAGE_FORMATS:
        return None, f"unsupported image format {image_format}; use PNG, JPEG or WebP"
    low, high = settings.GENHUB_MIN_IMAGE_SIDE, settings.GENHUB_MAX_IMAGE_SIDE
    if min(width, height) < low or max(width, height) > high:
        return None, f"{width}×{height} pixels; each side must be between {low} and {high}"
    content_type, extension = IMAGE_FORMATS[image_format]
    return InputImage(upload.name, upload.data, hashlib.sha256(upload.data).hexdigest(), content_type, extension,
                      width, height), None


ARCHIVE_SUFFIX = ".zip"
# Files that archivers and desktops add on their own; nobody means them as batch items.
ARCHIVE_JUNK_NAMES = {"thumbs.db", "desktop.ini"}


def _archive_member_is_junk(path: str) -> bool:
    parts = [part for part in path.split("/") if part]
    return (not parts or parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts)
            or parts[-1].lower() in ARCHIVE_JUNK_NAMES)


def _archive_members(upload: UploadedFile, budget: int, errors: list[dict]) -> list[tuple[str, UploadedFile]]:
    """The usable members of one ZIP as (path inside the archive, file named by its base name).

    The whole archive is refused before anything is read when it declares more than the request's
    remaining `budget` of unpacked bytes, so a zip bomb costs only its central directory.
    """
    max_items, max_bytes = settings.GENHUB_MAX_BATCH_ITEMS, settings.GENHUB_MAX_IMAGE_BYTES
    try:
        archive = zipfile.ZipFile(io.BytesIO(upload.data))
        infos = [info for info in archive.infolist()
                 if not info.is_dir() and not _archive_member_is_junk(info.filename)]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError):
        errors.append(_error("images", "not a readable ZIP archive", upload.name))
        return []
    if not infos:
        errors.append(_error("images", "the archive holds no files", upload.name))
        return []
    if len(infos) > max_items:
        errors.append(_error("images", f"the archive holds {len(infos)} files, the limit is {max_items} per batch",
                             upload.name))
        return []
    declared = sum(info.file_size for info in infos)
    if declared > budget:
        errors.append(_error("images", f"the archive unpacks to {declared} bytes, more than the "
                                       f"{settings.GENHUB_MAX_ARCHIVE_BYTES} bytes all archives of a batch may hold",
                             upload.name))
        return []

    members = []
    for info in infos:
        base = posixpath.basename(info.filename)
        where = f"{upload.name}: {info.filename}"
        if base.lower().endswith(ARCHIVE_SUFFIX):
            errors.append(_error("images", f"{where} is an archive inside the archive; nested archives are not "
                                           "expanded", base))
        elif info.flag_bits & 0x1:
            errors.append(_error("images", f"{where} is encrypted; upload it without a password", base))
        elif info.file_size > max_bytes:
            errors.append(_error("images", f"{where} is too large: {info.file_size} bytes, the limit is "
                                           f"{max_bytes} bytes", base))
        elif info.file_size > 1024 * 1024 and info.file_size > settings.GENHUB_MAX_ARCHIVE_RATIO * max(
                1, info.compress_size):
            errors.append(_error("images", f"{where} expands {info.file_size // max(1, info.compress_size)}-fold; "
                                           "that looks like a zip bomb, not an image", base))
        else:
            try:
                # zipfile stops at the declared size and checks the CRC, so a lying header cannot inflate this.
                with archive.open(info) as member:
                    data = member.read(max_bytes + 1)
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError) as exc:
                errors.append(_error("images", f"{where} could not be read: {exc}", base))
                continue
            members.append((info.filename, UploadedFile(base, data)))
    return members


def expand_archives(files: list[UploadedFile]) -> tuple[list[UploadedFile], list[dict]]:
    """Replaces each uploaded ZIP by the files inside it → (files, errors).

    Members are named by their base name, because names are what CSV rows pair with; two members
    (or a member and a directly uploaded file) with the same name are reported, naming both
    places, and only the first is kept so the same clash is not reported twice downstream.
    Directories, `__MACOSX/` and hidden files are skipped. Non-ZIP files pass through unchanged.
    """
    errors: list[dict] = []
    expanded: list[UploadedFile] = []
    origin: dict[str, str] = {}  # name → where the kept file of that name came from
    budget = settings.GENHUB_MAX_ARCHIVE_BYTES

    def keep(file: UploadedFile, here: str) -> None:
        if origin.get(file.name, here) != here:
            errors.append(_error("images", f"two files are named {file.name} ({origin[file.name]}; {here}); "
                                           "names pair files with rows, so rename one", file.name))
            return
        origin[file.name] = here
        expanded.append(file)

    for upload in files:
        if not upload.name.lower().endswith(ARCHIVE_SUFFIX):
            # Two direct uploads of one name pass through: build_batch reports that clash itself.
            keep(upload, "uploaded directly")
            continue
        for path, member in _archive_members(upload, budget, errors):
            budget -= len(member.data)
            keep(member, f"{upload.name}: {path}")
    return expanded, errors


def parse_rows(text: str) -> tuple[list[dict], list[dict]]:
    """Per-item rows as CSV/TSV (with a header) or a JSON list of objects → (rows, errors)."""
    text = text.strip()
    if not text:
        return [], []
    if text[0] in "[{":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            return [], [_error("items", f"not valid JSON: {exc.msg} (line {exc.lineno})")]
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            return [], [_error("items", "JSON items must be a list of objects")]
    else:
        dialect = "excel-tab" if "\t" in text.splitlines()[0] else "excel"
        rows = list(csv.DictReader(io.StringIO(text), dialect=dialect))
        if rows and "file" not in rows[0]:
            return [], [_error("items", f"CSV needs a header row with columns {', '.join(ROW_FIELDS)}")]
    errors = []
    for number, row in enumerate(rows, start=1):
        unknown = sorted(set(row) - set(ROW_FIELDS))
        if unknown:
            errors.append(_error("items", f"row {number}: unknown column(s) {', '.join(map(str, unknown))}"))
        if not str(row.get("file") or "").strip():
            errors.append(_error("items", f"row {number}: 'file' is required"))
    return rows, errors


# What `fallback_after` counts, and its range, per policy.
FALLBACK_LIMITS = {
    BatchRun.Fallback.UNRECOVERABLE: ("minutes", 1, 24 * 60),
    BatchRun.Fallback.ATTEMPTS: ("attempts", 1, 10),
}


def check_spend_options(*, provider: str, budget_usd, fallback, fallback_after) -> tuple[dict, list[dict]]:
    """The batch's cap and fallback policy → (model fields, errors)."""
    errors, fields = [], {"budget_usd": None, "fallback_policy": BatchRun.Fallback.NEVER, "fallback_after": None}
    if budget_usd not in (None, ""):
        try:
            budget = Decimal(str(budget_usd)).quantize(Decimal("0.01"))
        except (InvalidOperation, ValueError):
            budget = None
        if budget is None or not budget.is_finite() or budget < 0 or budget >= Decimal("100000000"):
            errors.append(_error("budget_usd", "must be an amount in USD, at least 0 (e.g. 25 or 12.50)"))
        else:
            fields["budget_usd"] = budget
    fallback = fallback or BatchRun.Fallback.NEVER
    if fallback not in BatchRun.Fallback.values:
        errors.append(_error("fallback", f"must be one of {', '.join(BatchRun.Fallback.values)}"))
    elif fallback != BatchRun.Fallback.NEVER:
        if provider != Provider.VASTAI:
            errors.append(_error("fallback", "only a vastai batch can fall back (to fal)"))
        unit, low, high = FALLBACK_LIMITS[fallback]
        try:
            after = int(fallback_after)
        except (TypeError, ValueError):
            after = None
        if after is None or not low <= after <= high:
            errors.append(_error("fallback_after", f"with fallback={fallback}, give the number of {unit} "
                                                   f"({low}–{high})"))
        fields.update(fallback_policy=fallback, fallback_after=after)
    return fields, errors


def check_provider_configured(provider: str) -> list[dict]:
    """A batch for a provider genhub has no credentials for would wait forever: refuse it up front."""
    if provider == Provider.FAL and not settings.FAL_KEY:
        return [_error("provider", "fal is not configured on this server (FAL_KEY is unset)")]
    if provider == Provider.VASTAI and not (settings.VAST_API_KEY and settings.SWARMUI_IMAGE):
        return [_error("provider", "vastai is not configured on this server (VAST_API_KEY or SWARMUI_IMAGE is unset)")]
    return []


def build_batch(*, provider: str, name: str = "", preset: str | None = None, params: dict | None = None,
                prompt: str = "", files: list[UploadedFile], rows_text: str = "",
                seeds_per_image: int = 1, budget_usd=None, fallback: str | None = None,
                fallback_after=None) -> BatchSpec:
    errors: list[dict] = []
    if provider not in Provider.values:
        errors.append(_error("provider", f"unknown provider {provider!r}; choose one of {', '.join(Provider.values)}"))
    else:
        errors += check_provider_configured(provider)
    spend_fields, spend_errors = check_spend_options(provider=provider, budget_usd=budget_usd, fallback=fallback,
                                                     fallback_after=fallback_after)
    errors += spend_errors
    if len(name) > 200:
        errors.append(_error("name", "must be at most 200 characters"))
    resolved, param_errors = gen_params.resolve_params(provider=provider, preset=preset, overrides=params or {})
    errors += [_error(e.field, e.message) for e in param_errors]
    max_items = settings.GENHUB_MAX_BATCH_ITEMS
    if not files:
        errors.append(_error("images", "at least one image is required"))
    elif len(files) > max_items:
        errors.append(_error("images", f"too many items: {len(files)}, the limit is {max_items} per batch"))
    if not isinstance(seeds_per_image, int) or not 1 <= seeds_per_image <= 16:
        errors.append(_error("seeds_per_image", "must be an integer between 1 and 16"))
        seeds_per_image = 1

    text_errors: list[gen_params.ParamError] = []
    batch_prompt = gen_params.validate_text(prompt or "", "prompt", text_errors, required=False)

    images: dict[str, InputImage] = {}
    for upload in files:
        if upload.name in images:
            errors.append(_error("images", "two files have this name; names pair files with rows", upload.name))
            continue
        image, reason = check_image(upload)
        if reason:
            errors.append(_error("images", reason, upload.name))
        else:
            images[upload.name] = image

    rows, row_errors = parse_rows(rows_text)
    errors += row_errors
    wanted = []  # (file name, prompt, negative prompt, seed or None, label for errors)
    named_in_rows = set()
    for number, row in enumerate(rows, start=1):
        file_name = str(row.get("file") or "").strip()
        label = f"row {number} ({file_name})"
        named_in_rows.add(file_name)
        if file_name and file_name not in images and not any(e.get("item") == file_name for e in errors):
            errors.append(_error("items", f"{label}: no uploaded image has this name", file_name))
        row_errors = []
        row_prompt = gen_params.validate_text(str(row.get("prompt") or ""), f"items[{number}].prompt",
                                              row_errors, required=False) or batch_prompt
        negative = gen_params.validate_text(str(row.get("negative_prompt") or ""), f"items[{number}].negative_prompt",
                                            row_errors, required=False)
        seed = row.get("seed")
        seed = None if seed in (None, "") else gen_params.validate_seed(seed, f"items[{number}].seed", row_errors)
        errors += [_error("items", f"{label}: {e.field.split('.')[-1]} {e.message}", file_name) for e in row_errors]
        if not row_prompt:
            errors.append(_error("items", f"{label}: no prompt (give one in the row or a batch prompt)", file_name))
        wanted.append((file_name, row_prompt, negative, seed))
    for upload in files:
        if upload.name not in named_in_rows:
            if not batch_prompt:
                errors.append(_error("prompt", "this image has no prompt: give a batch prompt or a row", upload.name))
            wanted.append((upload.name, batch_prompt, "", None))
    errors += [_error(e.field, e.message) for e in text_errors]

    total = len(wanted) * seeds_per_image
    if total > max_items and len(files) <= max_items:
        errors.append(_error("images", f"too many items: {total} jobs, the limit is {max_items} per batch"))
    if errors:
        raise BatchValidationError(errors)

    spec = BatchSpec(provider=provider, name=name.strip(), preset=preset or gen_params.DEFAULT_PRESET, params=resolved,
                     **spend_fields)
    rng = random.SystemRandom()
    for file_name, item_prompt, negative, seed in wanted:
        image = images[file_name]
        width, height = gen_params.video_size(resolved, image.width, image.height)
        item_params = {k: v for k, v in resolved.items() if k not in ("seed", "negative_prompt")}
        item_params.update(width=width, height=height)
        for copy in range(seeds_per_image):
            base_seed = seed if seed is not None else resolved.get("seed")
            item_seed = (base_seed + copy) % 2**32 if base_seed is not None else rng.randrange(2**32)
            spec.items.append(ItemSpec(image, item_prompt, negative or resolved.get("negative_prompt", ""),
                                       item_seed, item_params))
    return spec
