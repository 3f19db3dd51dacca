"""The diagnostic pack: echo, uncapped cost, prompt stops, requested failures."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from packs.base import FieldError, PackError, PackInterrupted
from packs.diagnostic import DiagnosticPack
from tests.helpers.packs import POLICY, make_context

PACK = DiagnosticPack()


@pytest.mark.parametrize(
    ("cost_usd", "micros"),
    [
        ("0", 0),
        ("0.0000", 0),
        ("0.0001", 100),
        ("0.0123", 12_300),
        ("0.5", 500_000),
        ("12.34", 12_340_000),
        ("007.0100", 7_010_000),
        ("10000", 10_000_000_000),
        ("10000.0000", 10_000_000_000),
    ],
)
def test_cost_is_the_requested_amount_uncapped(cost_usd: str, micros: int) -> None:
    # A reservation of 100 micros is far below most of these: capping is the platform's job.
    result = PACK.execute({"cost_usd": cost_usd}, make_context(max_cost_micros=100))

    assert result.cost_micros == micros


def test_defaults_and_echo() -> None:
    result = PACK.execute({}, make_context())

    assert result.cost_micros == 0
    assert result.data == {"sleep_ms": 0, "cost_usd": "0.0000", "outcome": "succeed", "slept_ms": 0}


def test_sleeps_as_asked_and_echoes_normalised_inputs() -> None:
    started = time.monotonic()

    result = PACK.execute({"sleep_ms": 120, "cost_usd": "1.5", "outcome": "succeed"}, make_context())

    elapsed_ms = (time.monotonic() - started) * 1000
    assert {k: result.data[k] for k in ("sleep_ms", "cost_usd", "outcome")} == {
        "sleep_ms": 120,
        "cost_usd": "1.5000",
        "outcome": "succeed",
    }
    assert 120 <= result.data["slept_ms"] <= elapsed_ms + 1
    assert result.cost_micros == 1_500_000


def test_fail_outcome_fails_after_the_sleep() -> None:
    started = time.monotonic()

    with pytest.raises(PackError) as raised:
        PACK.execute({"sleep_ms": 60, "outcome": "fail"}, make_context())

    assert (raised.value.reason_code, raised.value.detail) == ("PACK_FAILED", "diagnostic outcome fail requested")
    assert time.monotonic() - started >= 0.06


def test_a_cancel_stops_the_sleep_within_a_slice() -> None:
    stop = threading.Event()
    threading.Timer(0.15, stop.set).start()
    started = time.monotonic()

    with pytest.raises(PackInterrupted):
        PACK.execute({"sleep_ms": 10_000}, make_context(should_stop=stop.is_set))

    assert 0.15 <= time.monotonic() - started < 0.15 + 0.15


def test_the_timebox_stops_the_sleep() -> None:
    started = time.monotonic()

    with pytest.raises(PackError) as raised:
        PACK.execute({"sleep_ms": 60_000}, make_context(timeout_s=0.2))

    assert raised.value.reason_code == "TIMEBOX_EXCEEDED"
    assert 0.2 <= time.monotonic() - started < 0.2 + 0.15


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({"cost_usd": "10000.0001"}, [("inputs.cost_usd", "must be a USD amount from 0.0000 to 10000.0000")]),
        ({"cost_usd": "99999"}, [("inputs.cost_usd", "must be a USD amount from 0.0000 to 10000.0000")]),
        ({"cost_usd": "1.23456"}, [("inputs.cost_usd", r"must match ^[0-9]+(\.[0-9]{1,4})?$")]),
        ({"cost_usd": "-1"}, [("inputs.cost_usd", r"must match ^[0-9]+(\.[0-9]{1,4})?$")]),
        ({"cost_usd": "1."}, [("inputs.cost_usd", r"must match ^[0-9]+(\.[0-9]{1,4})?$")]),
        ({"cost_usd": "١٢"}, [("inputs.cost_usd", r"must match ^[0-9]+(\.[0-9]{1,4})?$")]),  # Arabic-Indic digits
        ({"cost_usd": "1.5\n"}, [("inputs.cost_usd", "must be a USD amount from 0.0000 to 10000.0000")]),
        ({"cost_usd": 1.5}, [("inputs.cost_usd", "must be of type string")]),
        ({"sleep_ms": 60_001}, [("inputs.sleep_ms", "must be <= 60000")]),
        ({"sleep_ms": -1}, [("inputs.sleep_ms", "must be >= 0")]),
        ({"sleep_ms": 1.5}, [("inputs.sleep_ms", "must be of type integer")]),
        ({"outcome": "explode"}, [("inputs.outcome", "must be one of 'succeed', 'fail'")]),
        ({"boom": 1}, [("inputs", "unknown member(s): 'boom'")]),
    ],
)
def test_validation(inputs: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert PACK.validate(inputs, policy=POLICY) == [FieldError(field, message) for field, message in expected]


def test_floor_and_catalog_entry() -> None:
    assert PACK.price_floor_micros({"cost_usd": "5.0000"}) == 0
    assert PACK.pricing()["base_usd"] == "0.0000"
    assert (PACK.pack_type, PACK.max_timebox_sec) == ("diagnostic", 90)
