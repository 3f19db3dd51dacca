"""API-key authentication for DRF (SPEC §4 "Auth").

A missing, malformed or bad-checksum key is refused before any database query. A well-formed key is looked
up by its HMAC (one query, the tenant joined); the stored hash is compared in constant time.
"""

from __future__ import annotations

import hmac
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
from dpp.models import ApiKey, Tenant
from dpp.observability import tenant_id_var

# last_used_at is a hint for humans, not an audit trail: write it at most this often per key.
_LAST_USED_RESOLUTION = timedelta(minutes=5)
_KEY_FIELDS = ["id", "tenant_id", "prefix", "key_hash", "last_used_at", "revoked_at"]
_TENANT_FIELDS = ["id", "name", "status"]


def _aware(value: datetime | str | None) -> datetime | None:
    """A datetime read by a raw cursor: SQLite (embedded mode) returns naive UTC text."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is not None and timezone.is_naive(value):
        value = value.replace(tzinfo=UTC)
    return value


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
        if row is None or not hmac.compare_digest(row[3], digest) or row[5] is not None:
            raise ApplicationError("UNAUTHENTICATED", "The API key is unknown or revoked.")
        api_key = ApiKey.from_db(None, _KEY_FIELDS, (*row[:4], _aware(row[4]), row[5]))
        api_key.tenant = Tenant.from_db(None, _TENANT_FIELDS, row[6:9])
        for (name, _), value in zip(self.extra_columns, row[9:], strict=True):
            setattr(api_key, name, value)
        return api_key

    def _fetch(self, digest: str) -> tuple[Any, ...] | None:
        return sql.api_key_with_tenant(digest=digest, extra_columns=self.extra_columns)

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
