"""A CSV renderer for the views that offer one (`Accept: text/csv`), beside JSON.

The content negotiation never refuses (dpp.http.negotiation): an Accept that names neither gets the view's first
renderer, JSON. Errors never reach a renderer: they are problem responses (dpp.http.problems).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rest_framework.renderers import BaseRenderer
from rest_framework.utils.encoders import JSONEncoder

# A cell a spreadsheet would run as a formula (OWASP "CSV injection"): quoted with a leading apostrophe. A signed
# amount ("-0.0050") is a number, not a formula, and stays as it is.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER_RE = re.compile(r"[-+]?[0-9]+(\.[0-9]+)?")
_ENCODER = JSONEncoder()


def csv_cell(value: Any) -> str:
    """A value as the JSON of the same view shows it (datetimes, UUIDs as DRF's encoder writes them)."""
    if value is None:
        return ""
    text = str(value) if isinstance(value, str | int) else str(_ENCODER.default(value))
    if text.startswith(_FORMULA_START) and not _NUMBER_RE.fullmatch(text):
        return f"'{text}"
    return text


def csv_text(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """One header row, then one row per item (RFC 4180: CRLF line ends, quotes where needed)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    writer.writerows([csv_cell(row.get(column)) for column in columns] for row in rows)
    return out.getvalue()


class CsvRenderer(BaseRenderer):
    """Renders a list of flat dicts; the view names the columns (`csv_columns`), so an empty list still has its
    header row."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        view = (renderer_context or {}).get("view")
        columns: Sequence[str] = getattr(view, "csv_columns", ())
        return csv_text(columns, data).encode(self.charset)
