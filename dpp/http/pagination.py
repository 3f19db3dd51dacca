"""Opaque keyset cursors for list endpoints: stable while new rows arrive, no COUNT(*)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from drf_spectacular.utils import OpenApiParameter

from dpp.http.errors import ApplicationError

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

# The query parameters of every listing, as the OpenAPI document states them (with the bounds parse_limit keeps).
PAGE_PARAMETERS = [
    OpenApiParameter("cursor", str, description="next_cursor of the previous page"),
    OpenApiParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        description=f"1-{MAX_LIMIT}, default {DEFAULT_LIMIT}",
    ),
]


def encode_cursor(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    """The position a cursor names; 422 VALIDATION_ERROR for anything we did not issue."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError):
        position = None
    if not isinstance(position, dict):
        raise ApplicationError(
            "VALIDATION_ERROR",
            "The cursor is not valid.",
            errors=[{"field": "cursor", "message": "invalid cursor"}],
        )
    return position


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApplicationError(
            "VALIDATION_ERROR",
            f"limit must be an integer from 1 to {MAX_LIMIT}.",
            errors=[{"field": "limit", "message": f"1-{MAX_LIMIT}"}],
        )
    return int(raw)
