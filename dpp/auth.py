"""API-key authentication for DRF (SPEC §4 "Auth").

A missing, malformed or bad-checksum key is refused before any database query. A well-formed key is looked
up by its HMAC (one query, the tenant joined); the stored hash is compared in constant time.
"""

from __future__ import annotations

import hmac
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from dpp import keys
from dpp.errors import ApplicationError
from dpp.models import ApiKey, Tenant
from dpp.observability import tenant_id_var

# last_used_at is a hint for humans, not an audit trail: write it at most this often per key.
_LAST_USED_RESOLUTION = timedelta(minutes=5)


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

    def queryset(self) -> QuerySet[ApiKey]:
        """What one lookup reads: the key and its tenant (a subclass may annotate more in the same query)."""
        return ApiKey.objects.select_related("tenant").order_by()  # a unique lookup needs no ORDER BY

    def _lookup(self, token: str) -> ApiKey:
        digest = keys.hash_key(token, settings.DPP_API_KEY_PEPPER)
        api_key = next(iter(self.queryset().filter(key_hash=digest)[:1]), None)
        if api_key is None or not hmac.compare_digest(api_key.key_hash, digest) or api_key.is_revoked:
            raise ApplicationError("UNAUTHENTICATED", "The API key is unknown or revoked.")
        return api_key

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
