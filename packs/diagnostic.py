"""The ``diagnostic`` pack: sleeps, then succeeds or fails on request, at a requested cost.

For tests, load and chaos drills; only plans that name it may run it.
Guarantees:
- The price floor is 0, so a test may reserve less than ``cost_usd`` and watch the platform cap it:
  the pack reports ``cost_usd`` UNCAPPED.
- It sleeps in slices of at most 50 ms and calls ``context.check()`` between them, so a cancel, a lost
  lease or the end of the timebox stops it within about 50 ms.
- ``outcome: "fail"`` raises ``PackError("PACK_FAILED", ...)`` after the sleep.
- ``data`` echoes the inputs with defaults applied (``cost_usd`` normalised to 4 decimals) plus
  ``slept_ms``, the milliseconds actually slept (measured, rounded down).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from dpp.money import MAX_COST_MICROS, format_usd, usd_micros
from packs.base import FieldError, Pack, PackContext, PackError, PackResult, UrlPolicy, inputs_schema

MAX_SLEEP_MS = 60_000
_SLICE_S = 0.05

INPUT_SCHEMA = inputs_schema(
    {
        "sleep_ms": {"type": "integer", "minimum": 0, "maximum": MAX_SLEEP_MS, "default": 0},
        "cost_usd": {
            "type": "string",
            "pattern": r"^[0-9]+(\.[0-9]{1,4})?$",
            "maxLength": 20,
            "default": "0.0000",
            "description": "a 4-decimal USD amount, at most 10000.0000",
        },
        "outcome": {"enum": ["succeed", "fail"], "default": "succeed"},
    },
)


class DiagnosticPack(Pack):
    pack_type: ClassVar[str] = "diagnostic"
    version: ClassVar[str] = "1.0.0"
    description: ClassVar[str] = "Test pack: sleeps sleep_ms, then succeeds or fails as asked, at the requested cost."
    input_schema: ClassVar[dict[str, Any]] = INPUT_SCHEMA
    money_inputs: ClassVar[tuple[str, ...]] = ("cost_usd",)

    def semantic_errors(self, inputs: dict[str, Any], *, policy: UrlPolicy) -> list[FieldError]:
        micros = usd_micros(inputs.get("cost_usd", "0.0000"))
        if micros is None or micros > MAX_COST_MICROS:
            return [FieldError("inputs.cost_usd", "must be a USD amount from 0.0000 to 10000.0000")]
        return []

    def price_floor_micros(self, inputs: dict[str, Any]) -> int:
        return 0

    def price_ceiling_micros(self, inputs: dict[str, Any]) -> int:
        return usd_micros(inputs.get("cost_usd", "0.0000")) or 0  # what it is asked to cost (valid inputs)

    def pricing(self) -> dict[str, Any]:
        return {
            "model": "requested",
            "formula": "cost_usd, as requested in the inputs (may exceed the reservation: it is capped)",
            "base_usd": format_usd(0),
        }

    def execute(self, inputs: dict[str, Any], context: PackContext) -> PackResult:
        self.require_valid(inputs, policy=context.url_policy)
        sleep_ms = int(inputs.get("sleep_ms", 0))
        cost_micros = usd_micros(inputs.get("cost_usd", "0.0000"))
        if cost_micros is None:  # unreachable after require_valid; keeps the type honest
            raise PackError("PACK_FAILED", "invalid inputs: inputs.cost_usd")
        outcome = inputs.get("outcome", "succeed")
        slept_ms = _sleep(sleep_ms, context)
        if outcome == "fail":
            raise PackError("PACK_FAILED", "diagnostic outcome fail requested")
        data = {"sleep_ms": sleep_ms, "cost_usd": format_usd(cost_micros), "outcome": outcome}
        return PackResult(data={**data, "slept_ms": slept_ms}, cost_micros=cost_micros)


def _sleep(sleep_ms: int, context: PackContext) -> int:
    """Sleep ``sleep_ms`` in short slices, checking the context between them; the ms actually slept."""
    start = time.monotonic()
    end = start + sleep_ms / 1000
    while (left := end - time.monotonic()) > 0:
        context.check()
        time.sleep(min(_SLICE_S, left))
    context.check()
    return int((time.monotonic() - start) * 1000)
