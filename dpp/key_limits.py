"""The limits of an API key and of the keys above it (SPEC §8), as read with the key at authentication.

Pure values and arithmetic, no database: a key's chain (root first, the key itself last), its effective limits
(the tightest along the chain) and the UTC spend windows. The counting lives in billing (KeySpend).
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dpp.models import SpendWindow

# The bounds of the `total` window: all time. Stored as real timestamps so that a counter row always covers
# [window_start, window_end), whatever its kind.
TOTAL_START = datetime(1970, 1, 1, tzinfo=UTC)
TOTAL_END = datetime(9999, 1, 1, tzinfo=UTC)

# A window that is no longer than another (a child's spend window may be the same or a shorter one).
WINDOW_RANK: dict[str, int] = {SpendWindow.DAY: 0, SpendWindow.MONTH: 1, SpendWindow.TOTAL: 2}


@dataclass(frozen=True)
class KeyNode:
    """One key of a chain: what the submit checks and the spend counters need of it."""

    id: int
    prefix: str
    depth: int
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    spend_limit_micros: int | None
    spend_window: str
    max_cost_per_run_micros: int | None
    allowed_packs: tuple[str, ...] | None

    @property
    def has_spend_limit(self) -> bool:
        return self.spend_limit_micros is not None

    def usable_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


def window_bounds(kind: str, at: datetime) -> tuple[datetime, datetime]:
    """The UTC window of `kind` that contains `at`: [start, end)."""
    at = at.astimezone(UTC)
    if kind == SpendWindow.DAY:
        start = at.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    if kind == SpendWindow.MONTH:
        start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        days = calendar.monthrange(start.year, start.month)[1]
        return start, start + timedelta(days=days)
    if kind == SpendWindow.TOTAL:
        return TOTAL_START, TOTAL_END
    raise ValueError(f"unknown spend window {kind!r}")


def resets_at(kind: str, at: datetime) -> datetime | None:
    """When the window containing `at` ends; None for `total`, which never resets."""
    return None if kind == SpendWindow.TOTAL else window_bounds(kind, at)[1]


def limited_nodes(chain: tuple[KeyNode, ...]) -> tuple[KeyNode, ...]:
    """The keys of the chain whose spend is limited, root first (the lock order of their counters)."""
    return tuple(node for node in chain if node.has_spend_limit)


def nearest(chain: tuple[KeyNode, ...], matches: Callable[[KeyNode], bool]) -> KeyNode | None:
    """The key of the chain nearest to the key itself (the key first, then up the tree) that `matches`."""
    return next((node for node in reversed(chain) if matches(node)), None)


def nearest_limited(chain: tuple[KeyNode, ...]) -> KeyNode | None:
    """The key whose spend window a key reports: its own if limited, else its nearest limited ancestor's."""
    return nearest(chain, lambda node: node.has_spend_limit)


def over_limit(node: KeyNode, *, spent_micros: int, amount_micros: int) -> bool:
    """Whether `amount_micros` more would take the key's spend over its limit (the test of key_spend_reserve's
    conditional upsert, billing.services, read in Python by a quote)."""
    return node.spend_limit_micros is not None and spent_micros + amount_micros > node.spend_limit_micros


def max_cost_per_run(chain: tuple[KeyNode, ...]) -> int | None:
    """The tightest `max_cost_per_run` along the chain (None: no key sets one)."""
    limits = [node.max_cost_per_run_micros for node in chain if node.max_cost_per_run_micros is not None]
    return min(limits) if limits else None


def allowed_packs(chain: tuple[KeyNode, ...]) -> frozenset[str] | None:
    """The packs every key of the chain allows (None: no key restricts them; the plan decides)."""
    allowed: frozenset[str] | None = None
    for node in chain:
        if node.allowed_packs is not None:
            packs = frozenset(node.allowed_packs)
            allowed = packs if allowed is None else allowed & packs
    return allowed


def earliest_expiry(chain: tuple[KeyNode, ...]) -> datetime | None:
    expiries = [node.expires_at for node in chain if node.expires_at is not None]
    return min(expiries) if expiries else None
