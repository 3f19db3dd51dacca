"""Writes of the dpp app: tenants and API keys. Money (accounts, plans) is opened by billing's services."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from dpp import keys
from dpp.models import ApiKey, Tenant

TENANT_ID_RE = re.compile(r"[a-z0-9_-]{3,64}")

logger = logging.getLogger("dpp.keys")


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    secret: str  # the full key: shown once, never stored


def tenant_create(*, tenant_id: str, name: str = "") -> Tenant:
    """A new ACTIVE tenant; the id is a slug of 3-64 chars of [a-z0-9_-]."""
    if not TENANT_ID_RE.fullmatch(tenant_id):
        raise ValidationError(f"tenant id {tenant_id!r} must be 3-64 characters of [a-z0-9_-]")
    if Tenant.objects.filter(pk=tenant_id).exists():
        raise ValidationError(f"tenant {tenant_id!r} already exists")
    return Tenant.objects.create(id=tenant_id, name=name or tenant_id)


def api_key_issue(*, tenant: Tenant, label: str = "", environment: str = "live") -> IssuedKey:
    """A new key for the tenant; only its HMAC and its 16-character prefix are stored."""
    secret = keys.generate(environment)
    api_key = ApiKey.objects.create(
        tenant=tenant,
        prefix=keys.prefix(secret),
        key_hash=keys.hash_key(secret, settings.DPP_API_KEY_PEPPER),
        label=label,
    )
    return IssuedKey(api_key=api_key, secret=secret)


def api_key_revoke(*, key_prefix: str) -> ApiKey:
    """Revoke the one unrevoked key with this 16-character prefix; an ambiguous prefix is refused."""
    if len(key_prefix) != keys.PREFIX_LENGTH:
        raise ValidationError(f"a key prefix has exactly {keys.PREFIX_LENGTH} characters")
    matches = list(ApiKey.objects.filter(prefix=key_prefix, revoked_at__isnull=True)[:2])
    if not matches:
        raise ValidationError(f"no active key with prefix {key_prefix!r}")
    if len(matches) > 1:
        raise ValidationError(f"prefix {key_prefix!r} matches several active keys; revoke from the admin")
    updated = ApiKey.objects.filter(pk=matches[0].pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    if updated != 1:
        raise ValidationError(f"key {key_prefix!r} was revoked concurrently")
    matches[0].refresh_from_db()
    return matches[0]


def api_key_revoke_by_id(*, api_key: ApiKey, actor: str) -> bool:
    """Revoke this key now; False if it was already revoked (the first revocation time is kept)."""
    # Conditional UPDATE: two staff revoking at once both succeed, and revoked_at keeps the earlier time.
    updated = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    api_key.refresh_from_db(fields=["revoked_at"])
    if updated:
        logger.info("api key %s of %s revoked by %s", api_key.prefix, api_key.tenant_id, actor)
    return updated == 1


def tenant_set_status(*, tenant: Tenant, status: str, actor: str) -> bool:
    """Suspend or reactivate; False if the tenant already had that status. A suspended tenant's keys get 403."""
    if status not in Tenant.Status.values:
        raise ValidationError(f"unknown tenant status {status!r}")
    updated = Tenant.objects.filter(pk=tenant.pk).exclude(status=status).update(status=status)
    if updated:
        logger.info("tenant %s set %s by %s", tenant.pk, status, actor)
    return updated == 1


def tenant_low_balance_set(*, tenant_id: str, threshold_micros: int) -> Tenant:
    """The threshold under which `balance.low` is sent (0: off); a new threshold is armed afresh."""
    if threshold_micros < 0:
        raise ValidationError("the threshold cannot be negative")
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        raise ValidationError(f"no tenant {tenant_id!r}")
    tenant.low_balance_threshold_micros, tenant.low_balance_notified = threshold_micros, False
    tenant.save(update_fields=["low_balance_threshold_micros", "low_balance_notified"])
    return tenant
