"""The ``url`` pack: fetch one URL safely and describe what came back.

Guarantees:
- Price ``2_000 + 100 × ceil(bytes / 10_240)`` micros, bytes = body bytes actually read; price floor
  2_100 (SPEC: one 10 KiB block). An empty body costs 2_000.
- It never reads more than the reservation pays for: at most
  ``min(max_bytes, ((max_cost_micros − 2_000) // 100) × 10_240)`` bytes, so cost ≤ reservation;
  a body cut there reports ``truncated: true``.
- Any HTTP status is a successful fetch. Destinations follow ``dpp.http.outbound.addresses`` (blocked →
  ``URL_BLOCKED``), the connection rules follow ``dpp.http.outbound.client`` (failures → ``FETCH_FAILED``).
- ``validate`` refuses (at submit) a URL that is not https (or http when allowed), carries
  credentials, is malformed, or whose host is an IP literal in a blocked range. It resolves no name.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from dpp.http.outbound.addresses import block_reason
from dpp.http.outbound.target import InvalidUrlError, parse_target
from dpp.money import format_usd
from packs.base import FieldError, Pack, PackContext, PackError, PackResult, UrlPolicy, ceil_div, inputs_schema
from packs.url.client import fetch
from packs.url.extract import extract

BASE_MICROS = 2_000
PER_BLOCK_MICROS = 100
BLOCK_BYTES = 10_240
FLOOR_MICROS = BASE_MICROS + PER_BLOCK_MICROS
DEFAULT_MAX_BYTES = 1_048_576
MAX_BYTES = 10_485_760

INPUT_SCHEMA = inputs_schema(
    {
        "url": {
            "type": "string",
            "minLength": 1,
            "maxLength": 2048,
            "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
            "description": "https (http only where the platform allows it); no credentials",
        },
        "max_bytes": {"type": "integer", "minimum": 1, "maximum": MAX_BYTES, "default": DEFAULT_MAX_BYTES},
    },
    required=["url"],
)


class UrlPack(Pack):
    pack_type: ClassVar[str] = "url"
    version: ClassVar[str] = "1.0.0"
    description: ClassVar[str] = (
        "Fetch one public https URL (redirects followed and re-checked) and return its status, content "
        "type, size, SHA-256, title and first 2,000 characters of text."
    )
    input_schema: ClassVar[dict[str, Any]] = INPUT_SCHEMA

    def semantic_errors(self, inputs: dict[str, Any], *, policy: UrlPolicy) -> list[FieldError]:
        try:
            parse_target(inputs["url"], allow_http=policy.allow_http)
        except InvalidUrlError as exc:
            return [FieldError("inputs.url", str(exc))]
        reason = blocked_literal(inputs["url"], policy=policy)
        return [FieldError("inputs.url", reason)] if reason else []

    def price_floor_micros(self, inputs: dict[str, Any]) -> int:
        return FLOOR_MICROS

    def price_ceiling_micros(self, inputs: dict[str, Any]) -> int:
        return price_micros(int(inputs.get("max_bytes", DEFAULT_MAX_BYTES)))  # every byte it may read

    def pricing(self) -> dict[str, Any]:
        return {
            "model": "per_block_read",
            "formula": "0.0020 + 0.0001 × ceil(body bytes read / 10240)",
            "base_usd": format_usd(BASE_MICROS),
            "per_block_usd": format_usd(PER_BLOCK_MICROS),
            "block_bytes": BLOCK_BYTES,
            "floor_usd": format_usd(FLOOR_MICROS),
        }

    def execute(self, inputs: dict[str, Any], context: PackContext) -> PackResult:
        url = inputs.get("url")
        # A blocked literal is also an invalid input, but a run that gets here fails as URL_BLOCKED.
        if isinstance(url, str) and (reason := blocked_literal(url, policy=context.url_policy)):
            raise PackError("URL_BLOCKED", f"{url[:300]}: {reason}")
        self.require_valid(inputs, policy=context.url_policy)
        cap = byte_cap(int(inputs.get("max_bytes", DEFAULT_MAX_BYTES)), context.max_cost_micros)
        if cap <= 0:
            raise PackError("PACK_FAILED", f"the reservation is below the price floor {format_usd(FLOOR_MICROS)}")
        fetched = fetch(inputs["url"], cap=cap, context=context)
        title, text = extract(fetched.body, fetched.content_type, fetched.charset)
        data = {
            "final_url": fetched.final_url,
            "status": fetched.status,
            "content_type": fetched.content_type,
            "bytes": len(fetched.body),
            "sha256": hashlib.sha256(fetched.body).hexdigest(),
            "title": title,
            "text": text,
            "redirect_chain": fetched.redirect_chain,
            "truncated": fetched.truncated,
        }
        return PackResult(data=data, cost_micros=price_micros(len(fetched.body)))


def price_micros(body_bytes: int) -> int:
    """2_000 + 100 per started block of 10_240 bytes."""
    return BASE_MICROS + PER_BLOCK_MICROS * ceil_div(body_bytes, BLOCK_BYTES)


def byte_cap(max_bytes: int, max_cost_micros: int) -> int:
    """The most bytes the run may read: what was asked, and no more than the reservation pays for."""
    return min(max_bytes, (max_cost_micros - BASE_MICROS) // PER_BLOCK_MICROS * BLOCK_BYTES)


def blocked_literal(url: str, *, policy: UrlPolicy | None = None) -> str | None:
    """Why ``url`` is refused at submit when its host is an IP literal in a blocked range, else None.

    Names are not resolved here (that happens, once per hop, at fetch time); an unparsable URL gives
    None (``validate`` reports it on its own).
    """
    try:
        target = parse_target(url, allow_http=True)
    except InvalidUrlError:
        return None
    if target.address is None:
        return None
    reason = block_reason(target.address, policy.extra_allowed_networks if policy else ())
    return None if reason is None else f"{target.host} is a blocked address ({reason})"
