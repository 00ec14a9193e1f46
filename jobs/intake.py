"""Turns an uploaded bulk request into validated batch items, or one error listing every problem.

Nothing here writes to the database or storage: a rejected request changes nothing. Images are
checked by `jobs.images`, ZIPs unpacked by `jobs.archives`, rows parsed by `jobs.rows`. An item may
name its image by `image_url` instead of an upload: the URL is judged here (`jobs.image_sources`), the
image itself is fetched later, in the background (`jobs.fetching`).
"""

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.utils import timezone

from jobs import params as gen_params
from jobs.archives import expand_archives
from jobs.image_sources import image_url_problem, shown_url, source_name
from jobs.images import InputImage, check_image
from jobs.models import BatchRun, Provider
from jobs.rows import ROW_FIELDS, parse_rows
from jobs.uploaded import Spool, UploadedFile
from jobs.webhooks import url_problem

__all__ = ["ROW_FIELDS", "BatchSpec", "BatchValidationError", "InputImage", "ItemSpec", "UploadedFile", "build_batch",
           "check_image", "expand_archives", "parse_rows"]


class BatchValidationError(Exception):
    def __init__(self, errors: list[dict]):
        super().__init__(f"{len(errors)} problem(s) in the batch")
        self.errors = errors


@dataclass
class ItemSpec:
    image: InputImage | None  # None: fetched later from `image_url`
    prompt: str
    negative_prompt: str
    seed: int
    params: dict  # without width/height for a URL item: they follow from the image once it is fetched
    image_url: str = ""

    @property
    def name(self) -> str:
        return self.image.name if self.image is not None else source_name(self.image_url)


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
    deadline: datetime | None = None
    webhook_url: str = ""
    webhook_events: str = BatchRun.WebhookEvents.BATCH
    # Where re-oriented images live until they are stored; it goes away with the spec.
    spool: Spool | None = field(default=None, repr=False)


def _error(field_name: str, message: str, item: str | None = None) -> dict:
    error = {"field": field_name, "message": message}
    if item is not None:
        error["item"] = item
    return error


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


MAX_DEADLINE_DAYS = 366


def parse_deadline(raw, *, provider: str | None = None) -> tuple[datetime | None, list[dict]]:
    """`deadline`: an ISO 8601 time with its timezone, in the future (None/"" → no deadline).

    Only a vastai batch can act on one (by moving work to fal); a fal batch already runs all at once."""
    if raw in (None, ""):
        return None, []
    problem = "must be an ISO 8601 time with a timezone, e.g. 2026-12-02T09:00:00+01:00 or 2026-12-02T08:00:00Z"
    if not isinstance(raw, str) or len(raw) > 64:
        return None, [_error("deadline", problem)]
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        return None, [_error("deadline", problem)]
    if moment.tzinfo is None or moment.utcoffset() is None:
        return None, [_error("deadline", problem + " (this one has no timezone)")]
    now = timezone.now()
    if moment <= now:
        return None, [_error("deadline", "must be in the future")]
    if moment > now + timedelta(days=MAX_DEADLINE_DAYS):
        return None, [_error("deadline", f"must be within {MAX_DEADLINE_DAYS} days")]
    if provider is not None and provider != Provider.VASTAI:
        return None, [_error("deadline", "only a vastai batch takes a deadline (it moves work to fal to meet it); "
                                         "a fal batch runs all at once")]
    return moment, []


def check_webhook_options(*, webhook_url, webhook_events) -> tuple[dict, list[dict]]:
    """The batch's webhook: where to POST (see jobs.webhooks.url_problem) and what to report."""
    fields = {"webhook_url": "", "webhook_events": BatchRun.WebhookEvents.BATCH}
    errors = []
    if webhook_url not in (None, ""):
        problem = url_problem(webhook_url)
        if problem:
            errors.append(_error("webhook_url", problem))
        else:
            fields["webhook_url"] = webhook_url
    if webhook_events not in (None, ""):
        if webhook_events not in BatchRun.WebhookEvents.values:
            errors.append(_error("webhook_events", f"must be one of {', '.join(BatchRun.WebhookEvents.values)}"))
        elif webhook_events != BatchRun.WebhookEvents.BATCH and not fields["webhook_url"] and not errors:
            errors.append(_error("webhook_events", "job events need a webhook_url to go to"))
        elif fields["webhook_url"]:
            fields["webhook_events"] = webhook_events
    return fields, errors


def check_provider_configured(provider: str) -> list[dict]:
    """A batch for a provider genhub has no credentials for would wait forever: refuse it up front."""
    if provider == Provider.FAL and not settings.FAL_KEY:
        return [_error("provider", "fal is not configured on this server (FAL_KEY is unset)")]
    if provider == Provider.VASTAI and not (settings.VAST_API_KEY and settings.SWARMUI_IMAGE):
        return [_error("provider", "vastai is not configured on this server (VAST_API_KEY or SWARMUI_IMAGE is unset)")]
    return []


def _or_empty(value):
    return "" if value is None else value


def build_batch(*, provider: str, name: str = "", preset: str | None = None, params: dict | None = None,
                prompt: str = "", files: list[UploadedFile], rows_text: str = "",
                seeds_per_image: int = 1, budget_usd=None, fallback: str | None = None,
                fallback_after=None, deadline=None, webhook_url=None, webhook_events=None,
                spool: Spool | None = None) -> BatchSpec:
    """`spool` holds bytes made along the way (re-oriented images); the spec keeps it alive."""
    errors: list[dict] = []
    spool = Spool() if spool is None else spool
    if not isinstance(provider, str) or provider not in Provider.values:
        errors.append(_error("provider", f"unknown provider {provider!r}; choose one of {', '.join(Provider.values)}"))
    else:
        errors += check_provider_configured(provider)
    spend_fields, spend_errors = check_spend_options(provider=provider, budget_usd=budget_usd, fallback=fallback,
                                                     fallback_after=fallback_after)
    errors += spend_errors
    deadline_at, deadline_errors = parse_deadline(deadline, provider=provider)
    hook_fields, hook_errors = check_webhook_options(webhook_url=webhook_url, webhook_events=webhook_events)
    errors += deadline_errors + hook_errors
    if len(name) > 200:
        errors.append(_error("name", "must be at most 200 characters"))
    if "\x00" in name:
        errors.append(_error("name", "must not contain NUL characters"))
    resolved, param_errors = gen_params.resolve_params(provider=provider, preset=preset, overrides=params or {})
    errors += [_error(e.field, e.message) for e in param_errors]
    max_items = settings.GENHUB_MAX_BATCH_ITEMS
    rows, row_errors = parse_rows(rows_text)
    by_url = any(isinstance(row.get("image_url"), str) and row["image_url"].strip() for row in rows)
    if not files and not by_url:
        errors.append(_error("images", "at least one image is required (upload images, or give items with "
                                       "image_url)"))
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
        if "\x00" in upload.name or len(upload.name) > 255:
            errors.append(_error("images", "a file name must be at most 255 characters, without NUL characters",
                                 upload.name[:255].replace("\x00", "\\0")))
            continue
        image, reason = check_image(upload, spool)
        if reason:
            errors.append(_error("images", reason, upload.name))
        else:
            images[upload.name] = image

    errors += row_errors
    wanted = []  # (file name, prompt, negative prompt, seed or None, image URL or "")
    named_in_rows = set()
    for number, row in enumerate(rows, start=1):
        file_name = row.get("file")
        file_name = file_name.strip() if isinstance(file_name, str) else ""
        image_url = row.get("image_url")
        image_url = image_url.strip() if isinstance(image_url, str) and not file_name else ""
        label = f"row {number} ({file_name or shown_url(image_url)})"
        item = file_name or shown_url(image_url)
        named_in_rows.add(file_name)
        if file_name and file_name not in images and not any(e.get("item") == file_name for e in errors):
            errors.append(_error("items", f"{label}: no uploaded image has this name", file_name))
        if image_url and (problem := image_url_problem(image_url)):
            errors.append(_error("items", f"{label}: {problem}", item))
        row_errors = []
        # Values keep their JSON type: a prompt given as an object is an error, not its Python repr.
        row_prompt = gen_params.validate_text(_or_empty(row.get("prompt")), f"items[{number}].prompt",
                                              row_errors, required=False) or batch_prompt
        negative = gen_params.validate_text(_or_empty(row.get("negative_prompt")),
                                            f"items[{number}].negative_prompt", row_errors, required=False)
        seed = row.get("seed")
        seed = None if seed in (None, "") else gen_params.validate_seed(seed, f"items[{number}].seed", row_errors)
        errors += [_error("items", f"{label}: {e.field.split('.')[-1]} {e.message}", item) for e in row_errors]
        if not row_prompt:
            errors.append(_error("items", f"{label}: no prompt (give one in the row or a batch prompt)", item))
        wanted.append((file_name, row_prompt, negative, seed, image_url))
    for upload in files:
        if upload.name not in named_in_rows:
            if not batch_prompt:
                errors.append(_error("prompt", "this image has no prompt: give a batch prompt or a row", upload.name))
            wanted.append((upload.name, batch_prompt, "", None, ""))
    errors += [_error(e.field, e.message) for e in text_errors]

    total = len(wanted) * seeds_per_image
    if total > max_items and len(files) <= max_items:
        errors.append(_error("images", f"too many items: {total} jobs, the limit is {max_items} per batch"))
    if errors:
        raise BatchValidationError(errors)

    spec = BatchSpec(provider=provider, name=name.strip(), preset=preset or gen_params.DEFAULT_PRESET, params=resolved,
                     spool=spool, deadline=deadline_at, **spend_fields, **hook_fields)
    rng = random.SystemRandom()
    for file_name, item_prompt, negative, seed, image_url in wanted:
        image = None if image_url else images[file_name]
        item_params = item_params_for(resolved, image.width, image.height) if image else item_params_for(resolved)
        for copy in range(seeds_per_image):
            base_seed = seed if seed is not None else resolved.get("seed")
            item_seed = (base_seed + copy) % 2**32 if base_seed is not None else rng.randrange(2**32)
            spec.items.append(ItemSpec(image, item_prompt, negative or resolved.get("negative_prompt", ""),
                                       item_seed, item_params, image_url=image_url))
    return spec


def item_params_for(resolved: dict, image_width: int | None = None, image_height: int | None = None) -> dict:
    """A job's parameters: the batch's, less the per-item ones, with the output size its image implies
    (left out while the image is not known yet: `jobs.fetching` adds it once it is)."""
    item_params = {k: v for k, v in resolved.items() if k not in ("seed", "negative_prompt")}
    if image_width is not None:
        width, height = gen_params.video_size(resolved, image_width, image_height)
        item_params.update(width=width, height=height)
    return item_params
