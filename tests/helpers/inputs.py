"""Pack inputs the tests submit, with what they cost."""

from __future__ import annotations

from typing import Any

DIAGNOSTIC_OK = {"sleep_ms": 0, "cost_usd": "0.0300", "outcome": "succeed"}
DIAGNOSTIC_FAIL = {"sleep_ms": 0, "cost_usd": "0.0300", "outcome": "fail"}
URL_INPUTS = {"url": "https://example.com/"}

# 3 options × 2 criteria: price 5_000 + 100 × 6 = 5_600 micros. Weighted sum: C 0.666667, A 0.5, B 0.333333.
DECISION_INPUTS: dict[str, Any] = {
    "question": "Which supplier?",
    "options": ["A", "B", "C"],
    "criteria": [
        {"name": "price", "weight": 2, "direction": "cost"},
        {"name": "quality", "weight": 1, "direction": "benefit"},
    ],
    "scores": {
        "A": {"price": 10, "quality": 7},
        "B": {"price": 12, "quality": 9},
        "C": {"price": 8, "quality": 5},
    },
}
DECISION_PRICE_MICROS = 5_600
