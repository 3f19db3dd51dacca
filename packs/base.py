"""The pack plugin contract: what the platform may rely on, and what a pack must guarantee.

A pack is a stateless object with a name, a JSON Schema (draft 2020-12) for its inputs, a price floor,
a public pricing description and an ``execute`` that turns valid inputs into a ``PackResult``.

Guarantees every pack keeps:
- ``validate`` never raises on any JSON-like value: it returns ``[]`` for valid inputs, else one
  ``FieldError`` per JSON Schema error (field paths start with ``inputs``), or, only when the schema
  holds, the pack's semantic errors. Schema errors come sorted by field, so the answer is reproducible.
- ``price_floor_micros`` is the least a run with those (valid) inputs can be charged, ``price_ceiling_micros``
  the most (before the cap at the reservation): a quote (SPEC §9) shows both, and suggests the ceiling.
- ``execute`` returns a cost in int micros, a multiple of 100, never negative (``PackResult`` refuses
  anything else). Capping the cost at the reservation is the platform's job, not the pack's.
- ``execute`` fails only with ``PackError`` (a reason code the run can carry) or ``PackInterrupted``
  (the run was canceled or the lease lost: the caller finalizes nothing). It never touches the database
  or money, and it polls ``context.check()`` often enough to stop promptly.
"""

from __future__ import annotations

import functools
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from dpp.http.outbound import OutboundPolicy
from dpp.money import GRANULE_MICROS

PACK_REASON_CODES = frozenset({"PACK_FAILED", "TIMEBOX_EXCEEDED", "URL_BLOCKED", "FETCH_FAILED"})


class PackError(Exception):
    """A pack's failure, carried to the run as ``error: {reason_code, detail}``."""

    def __init__(self, reason_code: str, detail: str) -> None:
        if reason_code not in PACK_REASON_CODES:
            raise ValueError(f"unknown pack reason code {reason_code!r}")
        super().__init__(f"{reason_code}: {detail}")
        self.reason_code = reason_code
        self.detail = detail


class PackInterrupted(Exception):  # noqa: N818 -- the name is fixed by the pack contract
    """Raised by ``PackContext.check()`` once the run was canceled or the worker lost its lease."""


@dataclass(frozen=True)
class FieldError:
    """One invalid input: ``field`` like ``inputs.options[2]`` or ``inputs.scores.A.price``."""

    field: str
    message: str


# Where the ``url`` pack may go: the platform's outbound policy (the defaults are production's).
UrlPolicy = OutboundPolicy


@dataclass
class PackContext:
    """What a running pack knows about its run: its budget, its deadline and whether to stop."""

    run_id: str
    trace_id: str
    max_cost_micros: int
    deadline: float  # a time.monotonic() value
    should_stop: Callable[[], bool]
    url_policy: UrlPolicy = field(default_factory=UrlPolicy)

    def remaining_s(self) -> float:
        """Seconds left in the timebox, never negative."""
        return max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        """Raise if the pack must stop now: cancel/lost lease first, then an exhausted timebox."""
        if self.should_stop():
            raise PackInterrupted(f"run {self.run_id} was canceled or its lease was lost")
        if time.monotonic() >= self.deadline:
            raise PackError("TIMEBOX_EXCEEDED", "the run's timebox is exhausted")


@dataclass(frozen=True)
class PackResult:
    """A successful execution: JSON-able ``data`` and the uncapped cost in micros."""

    data: dict[str, Any]
    cost_micros: int

    def __post_init__(self) -> None:
        cost = self.cost_micros
        if type(cost) is not int or cost < 0 or cost % GRANULE_MICROS:
            raise ValueError(f"cost_micros must be a non-negative int multiple of 100, got {cost!r}")


def inputs_schema(properties: dict[str, Any], *, required: Sequence[str] = ()) -> dict[str, Any]:
    """A pack's JSON Schema of inputs: an object of exactly these members, those in `required` required."""
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    schema["properties"] = properties
    return schema


def ceil_div(numerator: int, denominator: int) -> int:
    """Integer ceiling division (no float ever touches money)."""
    return -(-numerator // denominator)


class Pack(ABC):
    """Base class of every pack; subclasses are registered in ``packs.registry``."""

    pack_type: ClassVar[str]
    version: ClassVar[str]
    description: ClassVar[str]
    input_schema: ClassVar[dict[str, Any]]
    max_timebox_sec: ClassVar[int] = 90
    # Inputs that are USD amounts: the platform checks them as it checks any money on the wire (SPEC §2: a JSON
    # number is INVALID_MONEY, more than 4 decimals INVALID_MONEY_SCALE) before the pack's own validation.
    money_inputs: ClassVar[tuple[str, ...]] = ()

    @functools.cached_property
    def _validator(self) -> Draft202012Validator:
        """Built once per pack (the registry holds one instance of each): every submit validates its inputs."""
        return Draft202012Validator(self.input_schema)

    def validate(self, inputs: Any, *, policy: UrlPolicy) -> list[FieldError]:
        """Schema errors if any (one per error, sorted by field), else the semantic errors; [] = valid."""
        errors = _nul_errors(inputs, [])
        errors += [_field_error(error) for error in self._validator.iter_errors(inputs)]
        if errors:
            return sorted(errors, key=lambda e: (e.field, e.message))
        return self.semantic_errors(inputs, policy=policy)

    def semantic_errors(self, inputs: dict[str, Any], *, policy: UrlPolicy) -> list[FieldError]:
        """Checks a schema cannot express; called only on schema-valid inputs."""
        return []

    def require_valid(self, inputs: Any, *, policy: UrlPolicy) -> None:
        """Defence in depth for ``execute``: inputs were validated at submit, refuse them if not."""
        errors = self.validate(inputs, policy=policy)
        if errors:
            first = errors[0]
            raise PackError("PACK_FAILED", f"invalid inputs: {first.field}: {first.message}")

    @abstractmethod
    def price_floor_micros(self, inputs: dict[str, Any]) -> int:
        """The least a run with these valid inputs can cost, in micros."""

    @abstractmethod
    def price_ceiling_micros(self, inputs: dict[str, Any]) -> int:
        """The most a run with these valid inputs can cost, in micros (a multiple of 100), before the cap."""

    @abstractmethod
    def pricing(self) -> dict[str, Any]:
        """A JSON-able pricing description for the public catalog; money as 4-decimal USD strings."""

    @abstractmethod
    def execute(self, inputs: dict[str, Any], context: PackContext) -> PackResult:
        """Run the pack on valid inputs within ``context``'s budget and timebox."""


def field_path(parts: Any) -> str:
    """``["scores", "A", "price"]`` -> ``inputs.scores.A.price``; ``["options", 2]`` -> ``inputs.options[2]``."""
    path = "inputs"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _nul_errors(value: Any, parts: list[Any]) -> list[FieldError]:
    """Every string (member name or value) holding U+0000, which JSON allows and PostgreSQL's jsonb cannot store:
    refused at submit like any invalid input, whatever the pack's schema says of it."""
    if isinstance(value, str):
        return [FieldError(field_path(parts), _NUL_MESSAGE)] if "\x00" in value else []
    if isinstance(value, list):
        return [error for i, item in enumerate(value) for error in _nul_errors(item, [*parts, i])]
    if isinstance(value, dict):
        errors = []
        for name, item in value.items():
            if "\x00" in name:
                errors.append(FieldError(field_path([*parts, name.replace("\x00", "\\u0000")]), _NUL_MESSAGE))
            else:
                errors += _nul_errors(item, [*parts, name])
        return errors
    return []


_NUL_MESSAGE = "must not contain the character U+0000"


def _field_error(error: ValidationError) -> FieldError:
    """A jsonschema error as a FieldError pointing at the offending (or missing) field."""
    parts = list(error.absolute_path)
    if error.validator == "required":
        # The error sits on the parent object; point at the missing member instead.
        missing = [name for name in error.validator_value if error.message.startswith(f"{name!r} ")]
        if missing:
            return FieldError(field_path([*parts, missing[0]]), "is required")
    return FieldError(field_path(parts), _message(error))


_TEMPLATES = {
    "type": "must be of type {value}",
    "minLength": "must be at least {value} characters",
    "maxLength": "must be at most {value} characters",
    "minItems": "must have at least {value} items",
    "maxItems": "must have at most {value} items",
    "maxProperties": "must have at most {value} members",
    "minimum": "must be >= {value}",
    "maximum": "must be <= {value}",
    "exclusiveMinimum": "must be > {value}",
    "uniqueItems": "must not contain duplicates",
    "pattern": "must match {value}",
}


def _message(error: ValidationError) -> str:
    """A short message that does not echo the (possibly huge) offending value back."""
    keyword = str(error.validator)
    if keyword == "enum":
        return "must be one of " + ", ".join(repr(choice) for choice in error.validator_value)
    if keyword == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {})
        unknown = sorted(str(name) for name in error.instance if name not in known)
        return "unknown member(s): " + ", ".join(repr(name) for name in unknown)
    template = _TEMPLATES.get(keyword)
    return template.format(value=error.validator_value) if template else str(error.message)[:200]
