"""Writes of the dpp app: tenants and API keys. Money (accounts, plans) is opened by billing's services."""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, replace
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from dpp import key_limits, keys
from dpp.http.errors import ApplicationError
from dpp.key_limits import KeyNode
from dpp.models import MAX_KEY_DEPTH, ApiKey, SpendWindow, Tenant
from dpp.money import format_usd

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


@dataclass(frozen=True)
class KeyLimits:
    """The limits a key carries itself (SPEC §8), each optional: None is "not set" (the parent's applies)."""

    spend_limit_micros: int | None = None
    spend_window: str = ""  # with a spend limit: day | month | total
    max_cost_per_run_micros: int | None = None
    allowed_packs: tuple[str, ...] | None = None
    expires_at: datetime | None = None

    @classmethod
    def of(cls, api_key: ApiKey) -> KeyLimits:
        packs = api_key.allowed_packs
        return cls(
            spend_limit_micros=api_key.spend_limit_micros,
            spend_window=api_key.spend_window,
            max_cost_per_run_micros=api_key.max_cost_per_run_micros,
            allowed_packs=None if packs is None else tuple(packs),
            expires_at=api_key.expires_at,
        )


def _invalid(code: str, field: str, message: str) -> ApplicationError:
    return ApplicationError(code, f"{field}: {message}", errors=[{"field": field, "message": message}])


def _check_shape(limits: KeyLimits) -> None:
    if (limits.spend_limit_micros is None) != (not limits.spend_window):
        raise _invalid("VALIDATION_ERROR", "limits.spend_window", "is required with spend_limit_usd, and only with it")
    if limits.spend_window and limits.spend_window not in SpendWindow.values:
        raise _invalid("VALIDATION_ERROR", "limits.spend_window", "must be one of day, month, total")
    if limits.max_cost_per_run_micros is not None and limits.max_cost_per_run_micros <= 0:
        raise _invalid("VALIDATION_ERROR", "limits.max_cost_per_run_usd", "must be more than 0")
    if limits.expires_at is not None and limits.expires_at <= timezone.now():
        raise _invalid("VALIDATION_ERROR", "expires_at", "must be in the future")


def _check_within(limits: KeyLimits, above: tuple[KeyNode, ...]) -> None:
    """422 KEY_LIMIT_OVER_PARENT when a limit the key sets is looser than one of a key above it."""
    for node in key_limits.limited_nodes(above):
        assert node.spend_limit_micros is not None  # noqa: S101 - limited_nodes
        if limits.spend_limit_micros is not None and (
            limits.spend_limit_micros > node.spend_limit_micros
            or key_limits.WINDOW_RANK[limits.spend_window] > key_limits.WINDOW_RANK[node.spend_window]
        ):
            raise _invalid(
                "KEY_LIMIT_OVER_PARENT",
                "limits.spend_limit_usd",
                f"at most {format_usd(node.spend_limit_micros)} per {node.spend_window} (or a shorter window),"
                f" the limit of {node.prefix}",
            )
    cap = key_limits.max_cost_per_run(above)
    if limits.max_cost_per_run_micros is not None and cap is not None and limits.max_cost_per_run_micros > cap:
        raise _invalid("KEY_LIMIT_OVER_PARENT", "limits.max_cost_per_run_usd", f"at most {format_usd(cap)}")
    packs = key_limits.allowed_packs(above)
    if limits.allowed_packs is not None and packs is not None and not set(limits.allowed_packs) <= packs:
        raise _invalid("KEY_LIMIT_OVER_PARENT", "limits.allowed_packs", f"a subset of {sorted(packs)}")
    expiry = key_limits.earliest_expiry(above)
    if limits.expires_at is not None and expiry is not None and limits.expires_at > expiry:
        raise _invalid("KEY_LIMIT_OVER_PARENT", "expires_at", f"at most {expiry.isoformat()}")


def api_key_chain(*, api_key: ApiKey) -> tuple[KeyNode, ...]:
    """The key and the keys above it, root first (as authentication reads them)."""
    ids = [int(part) for part in api_key.path.split("/") if part]
    rows = {row.pk: row for row in ApiKey.objects.filter(pk__in=ids)}
    return tuple(api_key_node(rows[pk]) for pk in ids)


def api_key_node(api_key: ApiKey) -> KeyNode:
    """The key in a chain: who it is, whether it is usable, and the limits it carries (KeyLimits.of, its expiry too)."""
    return KeyNode(
        id=api_key.pk,
        prefix=api_key.prefix,
        depth=api_key.depth,
        created_at=api_key.created_at,
        revoked_at=api_key.revoked_at,
        **asdict(KeyLimits.of(api_key)),
    )


def _child_depth(tenant: Tenant, parent: ApiKey, limits: KeyLimits) -> int:
    """The depth of a new key below `parent`, or 422 if the parent cannot have it (another tenant's or revoked,
    at the last level, or `limits` beyond its own)."""
    if parent.tenant_id != tenant.pk or parent.revoked_at is not None:
        raise ValidationError("the parent key must be an active key of the same tenant")
    depth = parent.depth + 1
    if depth > MAX_KEY_DEPTH:
        raise _invalid(
            "VALIDATION_ERROR",
            "parent_prefix",
            f"keys go at most {MAX_KEY_DEPTH} levels below the tenant's first key; {parent.prefix} is at the"
            " last level and cannot have keys below it",
        )
    _check_within(limits, api_key_chain(api_key=parent))
    return depth


@transaction.atomic
def api_key_issue(
    *,
    tenant: Tenant,
    label: str = "",
    environment: str = "live",
    parent: ApiKey | None = None,
    limits: KeyLimits = KeyLimits(),
    can_manage_keys: bool = False,
) -> IssuedKey:
    """A new key for the tenant, below `parent` if given (within its limits, at most MAX_KEY_DEPTH below the
    tenant's first key); only its HMAC and its 16-character prefix are stored."""
    _check_shape(limits)
    depth = 0 if parent is None else _child_depth(tenant, parent, limits)
    secret = keys.generate(environment)
    api_key = ApiKey.objects.create(
        tenant=tenant,
        prefix=keys.prefix(secret),
        key_hash=keys.hash_key(secret, settings.DPP_API_KEY_PEPPER),
        label=label,
        parent=parent,
        depth=depth,
        can_manage_keys=can_manage_keys,
        expires_at=limits.expires_at,
        spend_limit_micros=limits.spend_limit_micros,
        spend_window=limits.spend_window,
        max_cost_per_run_micros=limits.max_cost_per_run_micros,
        allowed_packs=None if limits.allowed_packs is None else list(limits.allowed_packs),
    )
    # The path ends with the key's own id, known only now.
    api_key.path = f"{parent.path if parent else ''}{api_key.pk}/"
    ApiKey.objects.filter(pk=api_key.pk).update(path=api_key.path)
    return IssuedKey(api_key=api_key, secret=secret)


def api_key_update(*, api_key: ApiKey, label: str | None = None, limits: KeyLimits | None = None) -> ApiKey:
    """Change a key's label and limits (the same rules as at creation). Lowering a limit below what the key has
    already spent is allowed: it refuses new submits. The caller (runs.keys) rebuilds the spend counters."""
    changes: dict[str, object] = {}
    if label is not None:
        changes["label"] = label
    if limits is not None:
        _check_shape(limits)
        if api_key.parent_id is not None:
            _check_within(limits, api_key_chain(api_key=api_key)[:-1])
        changes.update(
            expires_at=limits.expires_at,
            spend_limit_micros=limits.spend_limit_micros,
            spend_window=limits.spend_window,
            max_cost_per_run_micros=limits.max_cost_per_run_micros,
            allowed_packs=None if limits.allowed_packs is None else list(limits.allowed_packs),
        )
    if changes:
        ApiKey.objects.filter(pk=api_key.pk).update(**changes)
        api_key.refresh_from_db()
    return api_key


def limits_merge(current: KeyLimits, **given: object) -> KeyLimits:
    """`current` with the members a PATCH gave (None clears one); a spend limit set alone keeps its window."""
    merged = replace(current, **given)  # type: ignore[arg-type]
    if "spend_limit_micros" in given and given["spend_limit_micros"] is None and "spend_window" not in given:
        merged = replace(merged, spend_window="")
    return merged


def _revoke_tree(api_key: ApiKey) -> bool:
    """Revoke the key and every key below it, in one UPDATE (a prefix match on the path): at once, all or none.
    The first revocation time of a key already revoked is kept; True if this call revoked `api_key` itself."""
    now = timezone.now()
    ApiKey.objects.filter(tenant_id=api_key.tenant_id, path__startswith=api_key.path, revoked_at__isnull=True).update(
        revoked_at=now
    )
    api_key.refresh_from_db(fields=["revoked_at"])
    return api_key.revoked_at == now


def api_key_revoke(*, key_prefix: str) -> ApiKey:
    """Revoke the one unrevoked key with this 16-character prefix; an ambiguous prefix is refused."""
    if len(key_prefix) != keys.PREFIX_LENGTH:
        raise ValidationError(f"a key prefix has exactly {keys.PREFIX_LENGTH} characters")
    matches = list(ApiKey.objects.filter(prefix=key_prefix, revoked_at__isnull=True)[:2])
    if not matches:
        raise ValidationError(f"no active key with prefix {key_prefix!r}")
    if len(matches) > 1:
        raise ValidationError(f"prefix {key_prefix!r} matches several active keys; revoke from the admin")
    if not _revoke_tree(matches[0]):
        raise ValidationError(f"key {key_prefix!r} was revoked concurrently")
    return matches[0]


def api_key_revoke_by_id(*, api_key: ApiKey, actor: str) -> bool:
    """Revoke this key and every key below it now; False if it was already revoked (the first revocation time is
    kept)."""
    # Conditional UPDATE: two staff revoking at once both succeed, and revoked_at keeps the earlier time.
    revoked = _revoke_tree(api_key)
    if revoked:
        logger.info("api key %s of %s and the keys below it revoked by %s", api_key.prefix, api_key.tenant_id, actor)
    return revoked


def tenant_set_status(*, tenant: Tenant, status: str, actor: str) -> bool:
    """Suspend or reactivate; False if the tenant already had that status. A suspended tenant's keys get 403."""
    if status not in Tenant.Status.values:
        raise ValidationError(f"unknown tenant status {status!r}")
    updated = Tenant.objects.filter(pk=tenant.pk).exclude(status=status).update(status=status)
    if updated:
        logger.info("tenant %s set %s by %s", tenant.pk, status, actor)
    return updated == 1


STAFF_GROUPS = ("finance", "ops")  # made by billing's migration 0002 (SPEC §1)


@transaction.atomic
def staff_user_create(*, username: str, group: str, password: str, email: str = "") -> User:
    """A staff login for the admin in one of the staff groups, never a superuser; the password must pass
    AUTH_PASSWORD_VALIDATORS (ValidationError otherwise, nothing created)."""
    staff_group = Group.objects.filter(name=group).first() if group in STAFF_GROUPS else None
    if staff_group is None:
        raise ValidationError(f"no staff group {group!r}: one of {', '.join(STAFF_GROUPS)} (made by migrate)")
    if User.objects.filter(username=username).exists():
        raise ValidationError(f"user {username!r} exists already")
    user = User(username=username, email=email, is_staff=True)
    user.full_clean(exclude=["password"])  # the user name's characters and length, the e-mail's shape
    validate_password(password, user)
    user.set_password(password)
    user.save()
    user.groups.add(staff_group)
    logger.info("staff user %s created in group %s", username, group)
    return user


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
