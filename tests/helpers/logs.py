"""Log records as the tests read them."""

from __future__ import annotations

import logging


def ids(record: logging.LogRecord) -> tuple[str | None, str | None]:
    """(trace_id, run_id) of a log record, as the JSON formatter writes them (set by dpp's ContextFilter)."""
    return getattr(record, "trace_id", None), getattr(record, "run_id", None)
