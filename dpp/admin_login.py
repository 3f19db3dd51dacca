"""Throttled admin login (SPEC §13): failed logins are limited per user name and per client address.

After `USER_LIMIT` failures of one user name within `WINDOW`, that user name is refused for `COOLOFF` — even with
the right password; after `ADDRESS_LIMIT` failures from one address within `WINDOW` (password spraying: many user
names), that address is refused likewise. A refused attempt is not authenticated and not counted, so a lock ends
`COOLOFF` after the failure that set it; `manage.py unlock_login` ends it at once.

The failures live in the database (`AdminLoginFailure`), not in Redis: the embedded mode (SQLite, no Redis) is
throttled too, and a Redis outage does not open the door. django-axes was weighed and not taken: it compares one
failure limit with the largest count over its lockout parameters, so it cannot say 10 per user name and 100 per
address at once (docs/decisions.md "Admin").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone

from dpp.http.ratelimit import client_address
from dpp.models import AdminLoginFailure

logger = logging.getLogger("dpp.admin_login")

USER_LIMIT = 10
ADDRESS_LIMIT = 100
WINDOW = timedelta(minutes=15)
COOLOFF = timedelta(minutes=15)
KEEP = timedelta(days=1)  # failure rows older than this are deleted when a new failure is recorded


@dataclass(frozen=True)
class LoginLock:
    by: str  # "username" or "address"
    until: datetime

    def message(self, now: datetime) -> str:
        minutes = max(1, -(-int((self.until - now).total_seconds()) // 60))
        whom = "this user name" if self.by == "username" else "your address"
        return (
            f"Too many failed logins for {whom}: logins are refused, even with the right password, until "
            f"{self.until:%H:%M} UTC (about {minutes} min). An operator can lift the lock at once with "
            f"'manage.py unlock_login'."
        )


def _column_text(value: str, limit: int) -> str:
    # PostgreSQL text cannot hold NUL; a longer value than the column would be a DataError: what an attacker
    # types must never turn a failed login into a 500.
    return value.replace("\x00", "").strip()[:limit]


def _locked_until(*, by: str, value: str, limit: int, now: datetime) -> datetime | None:
    """When the lock on this user name or address ends, or None: `limit` failures within WINDOW, the last one
    less than COOLOFF ago. Failures are not recorded while locked, so the latest failure is the one that set it."""
    recent = list(
        AdminLoginFailure.objects.filter(**{by: value}, cleared_at=None, failed_at__gt=now - WINDOW - COOLOFF)
        .order_by("-failed_at")
        .values_list("failed_at", flat=True)[:limit]
    )
    if len(recent) < limit or recent[0] - recent[-1] > WINDOW or now >= recent[0] + COOLOFF:
        return None
    return recent[0] + COOLOFF


def login_lock_get(*, username: str, address: str) -> LoginLock | None:
    now = timezone.now()
    checks = (("username", username, USER_LIMIT), ("address", address, ADDRESS_LIMIT))
    for by, value, limit in checks:
        until = _locked_until(by=by, value=value, limit=limit, now=now)
        if until is not None:
            return LoginLock(by=by, until=until)
    return None


def login_failure_record(*, username: str, address: str) -> None:
    now = timezone.now()
    AdminLoginFailure.objects.filter(failed_at__lt=now - KEEP).delete()
    AdminLoginFailure.objects.create(username=username, address=address, failed_at=now)
    failures = AdminLoginFailure.objects.filter(username=username, cleared_at=None, failed_at__gt=now - WINDOW)
    logger.warning(
        "admin login failed for %r from %s",
        username,
        address,
        extra={"login_username": username, "client_address": address, "user_failures": failures.count()},
    )


def login_unlock(*, username: str | None = None, address: str | None = None) -> int:
    """Clears the counted failures of a user name and/or an address; the number of failures cleared."""
    match = Q(pk__in=[])
    if username is not None:
        match |= Q(username=username)
    if address is not None:
        match |= Q(address=address)
    cleared = AdminLoginFailure.objects.filter(match, cleared_at=None).update(cleared_at=timezone.now())
    logger.warning(
        "admin login unlocked", extra={"login_username": username, "client_address": address, "cleared": cleared}
    )
    return cleared


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, which asks the throttle first and tells it of each failure."""

    error_messages = {**AdminAuthenticationForm.error_messages, "locked": "%(message)s"}

    def clean(self) -> dict[str, Any]:
        request: HttpRequest | None = self.request
        username = _column_text(self.cleaned_data.get("username") or "", 150)
        address = _column_text(client_address(request) if request is not None else "", 45) or "unknown"
        lock = login_lock_get(username=username, address=address)
        if lock is not None:
            logger.warning(
                "admin login refused for %r from %s: locked by %s",
                username,
                address,
                lock.by,
                extra={"login_username": username, "client_address": address, "locked_until": lock.until},
            )
            raise ValidationError(
                self.error_messages["locked"], code="locked", params={"message": lock.message(timezone.now())}
            )
        try:
            return super().clean()
        except ValidationError as exc:
            if exc.code == "invalid_login":
                login_failure_record(username=username, address=address)
            raise
