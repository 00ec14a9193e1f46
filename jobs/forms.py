"""Parsing a submitted batch: the new-batch page's form, and the field parsing it shares with the API.

Neither decides what a valid batch is: that is `jobs.intake.build_batch` (and `jobs.params`).
These only turn submitted fields into its arguments, and every problem into its error format
(`{"field", "item"?, "message"}`), so the page and the API report the same problems the same way.
"""

import json
from decimal import Decimal

from django import forms

from jobs import params as gen_params
from jobs.intake import (
    FALLBACK_LIMITS,
    BatchSpec,
    BatchValidationError,
    UploadedFile,
    build_batch,
    check_spend_options,
    expand_archives,
    parse_deadline,
)
from jobs.models import BatchRun, Provider
from jobs.rows import decode_text
from jobs.uploaded import Spool

# --- shared with the API ------------------------------------------------------------------


def read_text_upload(upload) -> tuple[str, list[dict]]:
    """An uploaded text file (CSV/TSV/JSON rows) → (text, errors): UTF-8 only, a spreadsheet's BOM dropped.
    Its size was bounded by the upload handler (GENHUB_MAX_ROWS_BYTES) while it arrived."""
    return decode_text(upload.read())


def parse_params_json(raw) -> tuple[dict, list[dict]]:
    """`params` as sent: a JSON object as text (multipart) or already parsed (JSON body)."""
    raw = raw or {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            return {}, [{"field": "params", "message": f"not valid JSON: {exc.msg}"}]
        except RecursionError:
            return {}, [{"field": "params", "message": "JSON nested too deeply; params is a flat object"}]
    if not isinstance(raw, dict):
        return {}, [{"field": "params", "message": "must be a JSON object"}]
    return raw, []


def parse_seeds_per_image(raw) -> tuple[int, list[dict]]:
    """The range itself is build_batch's to check; this only needs an integer."""
    if isinstance(raw, (bool, float)):
        return 1, [{"field": "seeds_per_image", "message": "must be an integer between 1 and 16"}]
    try:
        return int(raw or 1), []
    except (TypeError, ValueError):
        return 1, [{"field": "seeds_per_image", "message": "must be an integer between 1 and 16"}]


def batch_spec_from_upload(*, files: list[UploadedFile], errors: list[dict] = (), **fields) -> BatchSpec:
    """Unpacks uploaded ZIPs and validates the batch; raises one error listing every problem,
    the ones found while parsing the request (`errors`) first."""
    spool = Spool()  # ZIP members live here until stored; it goes with the spec (or with the error)
    files, archive_errors = expand_archives(files, spool)
    errors = [*errors, *archive_errors]
    try:
        spec = build_batch(files=files, spool=spool, **fields)
    except BatchValidationError as exc:
        raise BatchValidationError(errors + exc.errors) from None
    if errors:
        raise BatchValidationError(errors)
    return spec


# --- the new-batch page -------------------------------------------------------------------

PAIRING_PROMPT, PAIRING_ROWS, PAIRING_SEEDS = "prompt", "rows", "seeds"
PAIRING_CHOICES = [
    (PAIRING_PROMPT, "One prompt for every image"),
    (PAIRING_ROWS, "One row per image, from a CSV/TSV"),
    (PAIRING_SEEDS, "Several seeds per image"),
]
# Form fields that are generation parameters, under their `params` names.
PARAM_FIELDS = ("num_frames", "fps", "resolution", "steps", "cfg", "seed", "negative_prompt")
# Where each error of build_batch is shown on the page: `params.fps` next to the fps input, etc.
ERROR_ANCHORS = {"items": "rows", "params": "params"}


def _preset_label(name: str) -> str:
    preset = gen_params.PRESETS[name]
    title = name.upper() if len(name) <= 2 else name.capitalize()  # "HD", "Draft"
    # Short enough for the select on a phone (390 px): a longer label is cut off mid-figure.
    return f"{title}: {preset['num_frames']} frames, {preset['fps']} fps, {preset['resolution']}"


def _number(**attrs):
    return forms.NumberInput(attrs={"inputmode": "decimal", **attrs})


def _range(policy) -> str:
    _, low, high = FALLBACK_LIMITS[policy]
    return f"{low}–{high}"


Fallback = BatchRun.Fallback
# The policies in words; N and K are the number typed into `fallback_after` (its label says which).
FALLBACK_CHOICES = [
    (Fallback.NEVER, "Never: the jobs wait for the GPU"),
    (Fallback.UNRECOVERABLE, "When the GPU has been unavailable for N minutes, move the waiting jobs to fal.ai"),
    (Fallback.ATTEMPTS, "When a job has failed K times on the GPU, move that job to fal.ai"),
]
DEADLINE_HELP = ("vast.ai GPU batches: an ISO 8601 time with its timezone. If the GPU alone would finish later, "
                 "the fewest jobs needed move to fal.ai (at its price, within the budget).")
WEBHOOK_HELP = ("A signed POST when the batch finishes, so scripts need not poll; https only. The signing secret "
                "is shown once, after the batch is created.")
BUDGET_HELP = ("Optional. Jobs that would take the batch over it wait, paused, until the budget is raised. "
               "Blank: no budget.")


class BatchForm(forms.Form):
    """Values stay text: ranges and choices are checked once, by build_batch, for page and API alike."""

    name = forms.CharField(required=False, label="Batch name",
                           widget=forms.TextInput(attrs={"maxlength": 200, "placeholder": "e.g. spring catalogue"}))
    provider = forms.CharField(required=False, initial=Provider.FAL, label="Provider",
                               widget=forms.RadioSelect(choices=Provider.choices))
    pairing = forms.ChoiceField(choices=PAIRING_CHOICES, initial=PAIRING_PROMPT, label="How images get prompts",
                                widget=forms.RadioSelect)
    prompt = forms.CharField(required=False, label="Prompt", widget=forms.Textarea(attrs={"rows": 3}),
                             help_text="Used for every image that has no prompt of its own.")
    rows_file = forms.FileField(required=False, allow_empty_file=True, label="CSV/TSV file",
                                widget=forms.FileInput(attrs={"accept": ".csv,.tsv,.txt,.json,text/csv"}))
    rows_text = forms.CharField(required=False, label="…or paste the rows",
                                widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false",
                                                             "placeholder": "file,prompt,negative_prompt,seed\n"
                                                                            "cat.png,the cat turns its head,,42"}))
    seeds_per_image = forms.CharField(required=False, initial="4", label="Seeds per image",
                                      widget=_number(min=1, max=16, step=1))
    preset = forms.CharField(required=False, initial=gen_params.DEFAULT_PRESET, label="Preset", widget=forms.Select(
        choices=[(name, _preset_label(name)) for name in gen_params.PRESETS]))
    num_frames = forms.CharField(required=False, label="Frames",
                                 widget=_number(min=gen_params.MIN_FRAMES, max=gen_params.MAX_FRAMES, step=4),
                                 help_text=f"{gen_params.MIN_FRAMES}–{gen_params.MAX_FRAMES}, of the form 4n+1")
    fps = forms.CharField(required=False, label="Frames per second", widget=_number(min=4, max=60, step=1))
    resolution = forms.CharField(required=False, label="Resolution", widget=forms.Select(
        choices=[("", "Preset")] + [(name, name) for name in gen_params.RESOLUTIONS]))
    steps = forms.CharField(required=False, label="Steps", widget=_number(min=2, max=40, step=1))
    cfg = forms.CharField(required=False, label="Guidance (CFG)", widget=_number(min=1, max=10, step=0.5))
    seed = forms.CharField(required=False, label="Seed", widget=_number(min=0, step=1),
                           help_text="Blank: a random seed per item.")
    negative_prompt = forms.CharField(required=False, label="Negative prompt",
                                      widget=forms.Textarea(attrs={"rows": 2}))
    # Spending: the batch's cap, and what a vast.ai batch does when its GPU lets it down.
    budget_usd = forms.CharField(required=False, label="Budget (USD)", help_text=BUDGET_HELP,
                                 widget=_number(min=0, step="0.01", placeholder="no budget"))
    fallback = forms.CharField(required=False, initial=Fallback.NEVER, label="Fall back to fal.ai",
                               widget=forms.RadioSelect(choices=FALLBACK_CHOICES))
    fallback_after = forms.CharField(required=False, label="N minutes or K failed attempts",
                                     widget=_number(min=1, step=1),
                                     help_text=f"Minutes: {_range(Fallback.UNRECOVERABLE)}; failed attempts: "
                                               f"{_range(Fallback.ATTEMPTS)}. Not used with “Never”.")

    # Planning: a time to finish by (vast.ai batches), and a script to tell when it is done.
    deadline = forms.CharField(required=False, label="Finish by (optional)", help_text=DEADLINE_HELP,
                               widget=forms.TextInput(attrs={"placeholder": "2026-12-02T09:00+01:00",
                                                             "autocomplete": "off", "spellcheck": "false"}))
    webhook_url = forms.CharField(required=False, label="Webhook URL (optional)", help_text=WEBHOOK_HELP,
                                  widget=forms.URLInput(attrs={"placeholder": "https://example.com/hooks/genhub"}))
    webhook_events = forms.CharField(required=False, initial=BatchRun.WebhookEvents.BATCH, label="Tell the webhook",
                                     widget=forms.RadioSelect(choices=BatchRun.WebhookEvents.choices))

    def batch_fields(self) -> tuple[dict, list[dict]]:
        """build_batch's arguments (all but the files) and the problems found before it runs.

        Only the pairing mode is checked by the form itself; everything else is build_batch's to judge.
        """
        self.is_valid()
        errors = [{"field": field, "message": message} for field, messages in self.errors.items()
                  for message in messages]
        data = self.cleaned_data
        pairing = data.get("pairing") or PAIRING_PROMPT
        params = {name: value.strip() for name in PARAM_FIELDS if (value := (data.get(name) or "")).strip()}

        rows_text = ""
        if pairing == PAIRING_ROWS:
            rows_text = ""
            if data.get("rows_file"):
                rows_text, decode_errors = read_text_upload(data["rows_file"])
                errors += decode_errors
            if not rows_text.strip():
                rows_text = data.get("rows_text", "")
            if not rows_text.strip() and not any(e["field"] == "items" for e in errors):
                errors.append({"field": "items", "message": "this pairing needs rows: choose a CSV/TSV file or "
                                                            "paste them"})
        seeds = 1
        if pairing == PAIRING_SEEDS:
            seeds, seed_errors = parse_seeds_per_image(data.get("seeds_per_image"))
            errors += seed_errors
        fields = {"provider": data.get("provider", ""), "name": data.get("name", ""),
                  "preset": data.get("preset") or None, "params": params, "prompt": data.get("prompt", ""),
                  "rows_text": rows_text, "seeds_per_image": seeds,
                  "budget_usd": (data.get("budget_usd") or "").strip() or None,
                  "fallback": data.get("fallback") or None,
                  "fallback_after": (data.get("fallback_after") or "").strip() or None,
                  "deadline": (data.get("deadline") or "").strip() or None,
                  "webhook_url": (data.get("webhook_url") or "").strip() or None,
                  "webhook_events": (data.get("webhook_events") or "").strip() or None}
        return fields, errors


class BudgetForm(forms.Form):
    """The batch page's budget form: a new amount, or (action=remove) none at all.

    The amount is judged by the same rule as at creation (`intake.check_spend_options`)."""

    REMOVE = "remove"

    budget_usd = forms.CharField(required=False, label="Budget (USD)", widget=_number(
        min=0, step="0.01", placeholder="e.g. 5.00", **{"aria-describedby": "err-budget_usd"}))

    def budget(self, *, provider: str) -> tuple[Decimal | None, list[dict]]:
        """(the new budget, None for no budget; errors in build_batch's format)."""
        if self.data.get("action") == self.REMOVE:
            return None, []
        self.is_valid()
        raw = (self.cleaned_data.get("budget_usd") or "").strip()
        if not raw:
            return None, [{"field": "budget_usd", "message": "enter an amount in USD (e.g. 25 or 12.50), or remove "
                                                             "the budget"}]
        fields, errors = check_spend_options(provider=provider, budget_usd=raw, fallback=None, fallback_after=None)
        return fields["budget_usd"], errors


class DeadlineForm(forms.Form):
    """The batch page's deadline form: a new time, or (action=remove) none."""

    REMOVE = "remove"

    deadline = forms.CharField(required=False, label="Finish by", widget=forms.TextInput(attrs={
        "placeholder": "2026-12-02T09:00+01:00", "autocomplete": "off", "aria-describedby": "err-deadline"}))

    def deadline_value(self, *, provider: str):
        """(the new deadline, None for none; errors in build_batch's format)."""
        if self.data.get("action") == self.REMOVE:
            return None, []
        self.is_valid()
        raw = (self.cleaned_data.get("deadline") or "").strip()
        if not raw:
            return None, [{"field": "deadline", "message": "enter a time (ISO 8601 with a timezone), or remove the "
                                                           "deadline"}]
        return parse_deadline(raw, provider=provider)


def errors_by_anchor(errors: list[dict]) -> dict[str, list[dict]]:
    """Groups errors under the form field they are shown next to. `name` is the item (a file name)
    the error is about; `item` is the same, unless the message already names it (so it is not said twice)."""
    grouped: dict[str, list[dict]] = {}
    for error in errors:
        field = error["field"]
        anchor = field.split(".", 1)[1] if field.startswith("params.") else ERROR_ANCHORS.get(field, field)
        item = error.get("item")
        grouped.setdefault(anchor, []).append({
            "name": item, "message": error["message"],
            "item": None if item is None or item in error["message"] else item})
    return grouped
