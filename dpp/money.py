"""Money at the edges (SPEC §2): USD micros as `int` inside, 4-decimal strings on the wire.

Every stored amount is a whole multiple of 100 micros (0.0001 USD); prices round UP to the next 100.
No float is ever involved: parsing is by regular expression and integer arithmetic.
"""

from __future__ import annotations

import re
from typing import Any

from dpp.http.errors import ApplicationError

MICROS_PER_USD = 1_000_000
GRANULE_MICROS = 100
MAX_COST_MICROS = 10_000 * MICROS_PER_USD
MIN_FEE_FLOOR_MICROS = 5_000
MIN_FEE_CEILING_MICROS = 100_000

# [0-9], not \d: Python's \d also matches non-ASCII digits ("١.٠٠٠٠"), which int() would then accept.
# At most 12 whole digits after any leading zeros: 999,999,999,999.9999 USD in micros still fits a 64-bit integer
# column ("0000000000001.0000" is 1 USD, as SPEC §2's ^\d+(\.\d{1,4})?$ has it).
_MONEY_RE = re.compile(r"0*([0-9]{1,12})(?:\.([0-9]{1,4}))?")
_OVER_SCALE_RE = re.compile(r"[0-9]+\.[0-9]{5,}")
_TOO_MANY_DIGITS_RE = re.compile(r"0*[1-9][0-9]{12,}(?:\.[0-9]{1,4})?")


def ceil100(micros: int) -> int:
    """Round up to the next multiple of 100 micros."""
    return -(-micros // GRANULE_MICROS) * GRANULE_MICROS


def usd_micros(value: Any) -> int | None:
    """A non-negative money string such as "0.0500" → micros; None if it is not one (`parse_usd` says why)."""
    match = _MONEY_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    whole, fraction = match.group(1), match.group(2) or ""
    return int(whole) * MICROS_PER_USD + int(fraction.ljust(6, "0"))


def parse_usd(value: Any, *, field: str = "amount") -> int:
    """A non-negative money string such as "0.0500" → micros; 422 INVALID_MONEY / INVALID_MONEY_SCALE."""
    if not isinstance(value, str):
        raise ApplicationError(
            "INVALID_MONEY",
            f'{field} must be a JSON string with up to 4 decimals, e.g. "0.0500" (a JSON number is refused).',
            errors=[{"field": field, "message": 'expected a string like "0.0500"'}],
        )
    micros = usd_micros(value)
    if micros is None:
        if _OVER_SCALE_RE.fullmatch(value):
            raise ApplicationError(
                "INVALID_MONEY_SCALE",
                f"{field} has more than 4 decimals.",
                errors=[{"field": field, "message": "at most 4 decimals"}],
            )
        if _TOO_MANY_DIGITS_RE.fullmatch(value):  # the right shape, but no amount this platform handles
            raise ApplicationError(
                "INVALID_MONEY",
                f"{field} has more than 12 digits before the decimal point.",
                errors=[{"field": field, "message": "at most 12 digits before the decimal point"}],
            )
        raise ApplicationError(
            "INVALID_MONEY",
            f"{field} must match ^\\d+(\\.\\d{{1,4}})?$",
            errors=[{"field": field, "message": "not a money amount"}],
        )
    return micros


def parse_max_cost(value: Any, *, field: str = "reservation.max_cost_usd") -> int:
    """A reservation: > 0 and ≤ 10000.0000 USD."""
    micros = parse_usd(value, field=field)
    if micros <= 0 or micros > MAX_COST_MICROS:
        raise ApplicationError(
            "INVALID_MONEY",
            f"{field} must be more than 0 and at most 10000.0000.",
            errors=[{"field": field, "message": "must be > 0 and ≤ 10000.0000"}],
        )
    return micros


def format_usd(micros: int) -> str:
    """Micros → "0.0050"; negative amounts (ledger deltas) keep their sign: "-0.0050"."""
    if not isinstance(micros, int) or isinstance(micros, bool):
        raise TypeError(f"money must be int micros, got {type(micros).__name__}")
    if micros % GRANULE_MICROS:
        raise ValueError(f"{micros} micros is not a multiple of {GRANULE_MICROS}")
    sign = "-" if micros < 0 else ""
    whole, rest = divmod(abs(micros), MICROS_PER_USD)
    return f"{sign}{whole}.{rest // GRANULE_MICROS:04d}"


def minimum_fee(reserved_micros: int) -> int:
    """min(reserved, clamp(ceil100(reserved × 2 / 100), 0.0050, 0.1000)) — integer arithmetic only."""
    two_percent = -(-(reserved_micros * 2) // (100 * GRANULE_MICROS)) * GRANULE_MICROS
    clamped = min(max(two_percent, MIN_FEE_FLOOR_MICROS), MIN_FEE_CEILING_MICROS)
    return min(reserved_micros, clamped)
