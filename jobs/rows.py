"""Per-item rows: CSV/TSV with a header, or a JSON list of objects → dicts, with every problem named."""

import csv
import json
import re

from django.conf import settings

ROW_FIELDS = ("file", "image_url", "prompt", "negative_prompt", "seed")
# A row names its image by an uploaded file's name or by a URL genhub fetches (jobs/image_sources.py).
SOURCE_FIELDS = ("file", "image_url")


def _error(message: str) -> dict:
    return {"field": "items", "message": message}


def decode_text(data: bytes) -> tuple[str, list[dict]]:
    """An uploaded rows file must be UTF-8 (a spreadsheet's BOM is fine): guessing another encoding
    would store prompts with the wrong letters, so the error says where the first foreign byte is."""
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return "", [_error(f"line {line} is not UTF-8 (byte 0x{data[exc.start]:02X} at column {column}); "
                           "save the file as UTF-8 (in a spreadsheet: CSV UTF-8)")]


def _json_rows(text: str) -> tuple[list, list[dict]]:
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        return [], [_error(f"not valid JSON: {exc.msg} (line {exc.lineno})")]
    except RecursionError:
        return [], [_error("JSON nested too deeply; items are a flat list of objects")]
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        return [], [_error("JSON items must be a list of objects")]
    return rows, []


def _lines(text: str):
    """The text's lines, one at a time: a rows file may be megabytes, and io.StringIO would hold it
    again at four bytes a character."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def _csv_rows(text: str, limit: int) -> tuple[list, list[dict]]:
    first_line = next(_lines(text), "")
    dialect = "excel-tab" if "\t" in first_line else "excel"
    reader = csv.DictReader(_lines(text), dialect=dialect)
    rows, errors = [], []
    try:
        header = reader.fieldnames or []
        if not any(name in header for name in SOURCE_FIELDS):
            return [], [_error(f"CSV needs a header row with columns {', '.join(ROW_FIELDS)} (file or image_url "
                               "is required)")]
        unknown = [name for name in header if name not in ROW_FIELDS]
        if unknown:
            errors.append(_error(f"unknown column(s) {', '.join(unknown)} in the header; known: "
                                 f"{', '.join(ROW_FIELDS)}"))
        for row in reader:
            extra = row.pop(None, None)  # DictReader puts fields beyond the header under None
            if extra is not None:
                errors.append(_error(f"row {len(rows) + 1} (line {reader.line_num}) has more fields than the "
                                     f"header ({len(header) + len(extra)} for {len(header)} columns)"))
            rows.append(row)
            if len(rows) > limit:
                break
    except csv.Error as exc:
        # e.g. a field past the csv module's size limit, or a NUL byte: a prompt that long is no prompt anyway.
        errors.append(_error(f"line {reader.line_num}: not readable as CSV ({exc})"))
    return rows, errors


def parse_rows(text: str) -> tuple[list[dict], list[dict]]:
    """Per-item rows as CSV/TSV (with a header) or a JSON list of objects → (rows, errors)."""
    first = re.search(r"\S", text)  # not text.strip(): that would copy megabytes to drop a newline
    if first is None:
        return [], []
    text = text[first.start():] if first.start() else text
    is_json = text[0] in "[{"
    limit = settings.GENHUB_MAX_BATCH_ITEMS
    rows, errors = _json_rows(text) if is_json else _csv_rows(text, limit)
    if len(rows) > limit:
        return [], errors + [_error(f"more than {limit} rows; the limit is {limit} items per batch")]
    for number, row in enumerate(rows, start=1):
        unknown = [name for name in row if name not in ROW_FIELDS]
        if unknown and is_json:
            errors.append(_error(f"row {number}: unknown field(s) {', '.join(map(str, unknown))}"))
        given = [name for name in SOURCE_FIELDS if row.get(name) is not None]
        wrong_type = [name for name in given if not isinstance(row[name], str)]
        for name in wrong_type:
            errors.append(_error(f"row {number}: '{name}' must be text"))
        if wrong_type:
            continue
        given = [name for name in given if row[name].strip()]
        if len(given) > 1:
            errors.append(_error(f"row {number}: give 'file' or 'image_url', not both"))
        elif not given:
            errors.append(_error(f"row {number}: 'file' is required (or 'image_url')"))
    return rows, errors
