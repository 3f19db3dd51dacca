"""API-key authentication for DRF (SPEC §4 "Auth").

A missing, malformed or bad-checksum key is refused before any database query. A well-formed key is looked
up by its HMAC (one query, the tenant and the key's ancestors joined); the stored hash is compared in constant
time. A key is refused (401) when it or any key above it is revoked or expired: nothing is cached, so a
revocation holds from the next request on. The ApiKey carries its chain (`chain`: dpp.key_limits.KeyNode, root
first, the key last) for the submit's key limits and spend counters.
"""

from __future__ import annotations

import hmac
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from dpp import keys
from dpp.db import sql
from dpp.http.errors import ApplicationError
from dpp.key_limits import KeyNode
from dpp.models import MAX_KEY_DEPTH, ApiKey, Tenant
from dpp.observability import tenant_id_var

# last_used_at is a hint for humans, not an audit trail: write it at most this often per key.
_LAST_USED_RESOLUTION = timedelta(minutes=5)
_KEY_FIELDS = ["id", "tenant_id", "prefix", "key_hash", "last_used_at", "revoked_at"]
_TENANT_FIELDS = ["id", "name", "status"]
# Read for the key and each of its ancestors (aliases k, p1 … p3: a key is at most MAX_KEY_DEPTH below its root).
_NODE_COLUMNS = (
    "id",
    "prefix",
    "depth",
    "created_at",
    "expires_at",
    "revoked_at",
    "spend_limit_micros",
    "spend_window",
    "max_cost_per_run_micros",
    "allowed_packs",
)
_OWN_FIELDS = ["parent_id", "path", "can_manage_keys", "label", "created_at"]
_ALIASES = ("k", *(f"p{level}" for level in range(1, MAX_KEY_DEPTH + 1)))
_CHAIN_WIDTH = len(_NODE_COLUMNS) * len(_ALIASES) + len(_OWN_FIELDS)


def _aware(value: datetime | str | None) -> datetime | None:
    """A datetime read by a raw cursor: SQLite (embedded mode) returns naive UTC text."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is not None and timezone.is_naive(value):
        value = value.replace(tzinfo=UTC)
    return value


def _node(values: tuple[Any, ...]) -> KeyNode:
    fields = dict(zip(_NODE_COLUMNS, values, strict=True))
    for name in ("created_at", "expires_at", "revoked_at"):
        fields[name] = _aware(fields[name])
    packs = fields["allowed_packs"]
    if isinstance(packs, str):  # JSON read by a raw cursor is its text
        packs = json.loads(packs)
    fields["allowed_packs"] = None if packs is None else tuple(packs)
    return KeyNode(**fields)


def _chain(values: tuple[Any, ...]) -> tuple[tuple[KeyNode, ...], tuple[Any, ...]]:
    """The key's chain, root first, from the node columns of k, p1 … p3 (NULL past the root); and its own fields."""
    width = len(_NODE_COLUMNS)
    nodes = [values[i : i + width] for i in range(0, width * len(_ALIASES), width)]
    chain = tuple(_node(node) for node in reversed(nodes) if node[0] is not None)
    own = values[width * len(_ALIASES) :]
    return chain, (own[0], own[1], own[2], own[3], _aware(own[4]))


class ApiKeyAuthentication(BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Tenant, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None  # the permission check answers 401 UNAUTHENTICATED
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not keys.is_well_formed(token):
            raise ApplicationError("UNAUTHENTICATED", "The API key is malformed.")
        api_key = self._lookup(token)
        tenant = api_key.tenant
        tenant_id_var.set(tenant.id)
        if not tenant.is_active:
            raise ApplicationError("TENANT_SUSPENDED")
        self._touch(api_key)
        return tenant, api_key

    # Extra values read in the same query, for subclasses: (attribute set on the ApiKey, SQL expression over the
    # aliases k = dpp_apikey and t = dpp_tenant).
    extra_columns: tuple[tuple[str, str], ...] = ()

    def _lookup(self, token: str) -> ApiKey:
        digest = keys.hash_key(token, settings.DPP_API_KEY_PEPPER)
        row = self._fetch(digest)
        if row is None or not hmac.compare_digest(row[3], digest):
            raise ApplicationError("UNAUTHENTICATED", "The API key is unknown or revoked.")
        chain, own = _chain(row[9 : 9 + _CHAIN_WIDTH])
        now = timezone.now()
        if not all(node.usable_at(now) for node in chain):
            raise ApplicationError("UNAUTHENTICATED", "The API key (or a key above it) is revoked or expired.")
        me = chain[-1]
        values = dict(zip(_KEY_FIELDS, (*row[:4], _aware(row[4]), _aware(row[5])), strict=True))
        values.update(zip(_OWN_FIELDS, own, strict=True))
        values.update((name, getattr(me, name)) for name in _NODE_COLUMNS[2:] if name not in values)
        # from_db takes the values in the model's field order.
        names = [f.attname for f in ApiKey._meta.concrete_fields if f.attname in values]
        api_key = ApiKey.from_db(None, names, [values[name] for name in names])
        api_key.chain = chain  # type: ignore[attr-defined]
        api_key.tenant = Tenant.from_db(None, _TENANT_FIELDS, row[6:9])
        for (name, _), value in zip(self.extra_columns, row[9 + _CHAIN_WIDTH :], strict=True):
            setattr(api_key, name, value)
        return api_key

    def _fetch(self, digest: str) -> tuple[Any, ...] | None:
        # The key's chain: each ancestor by its primary key, one LEFT JOIN per level (at most MAX_KEY_DEPTH deep).
        nodes = ", ".join(f"{alias}.{column}" for alias in _ALIASES for column in _NODE_COLUMNS)
        own = ", ".join(f"k.{column}" for column in _OWN_FIELDS)
        ancestors = " ".join(
            f"LEFT JOIN dpp_apikey {alias} ON {alias}.id = {child}.parent_id"
            for child, alias in itertools.pairwise(_ALIASES)
        )
        return sql.api_key_with_tenant(
            digest=digest, chain_columns=f", {nodes}, {own}", chain_joins=ancestors, extra_columns=self.extra_columns
        )

    @staticmethod
    def _touch(api_key: ApiKey) -> None:
        now = timezone.now()
        if api_key.last_used_at is None or now - api_key.last_used_at > _LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="dpp"'


class IsTenant(BasePermission):
    """Any authenticated tenant; ownership of objects is enforced by filtering on the tenant."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not isinstance(request.user, Tenant):
            raise ApplicationError("UNAUTHENTICATED", "Send `Authorization: Bearer <api key>`.")
        return True
