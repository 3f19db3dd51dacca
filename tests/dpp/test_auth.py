"""The auth matrix of SPEC §4: missing, malformed, bad checksum (zero queries), unknown, revoked, suspended."""

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from dpp import keys
from dpp.models import ApiKey, Tenant
from dpp.services import api_key_revoke, tenant_set_status
from tests.helpers.personas import Persona

pytestmark = pytest.mark.django_db


def _problem(response, status: int, reason: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["reason_code"] == reason
    assert body["status"] == status
    assert body["type"] == f"/problems/{reason.lower().replace('_', '-')}"
    assert body["trace_id"] == response["X-Trace-Id"]
    return body


def test_valid_key_authenticates(owner: Persona) -> None:
    response = owner.client.get("/v1/account")
    assert response.status_code == 200
    assert response.json()["tenant_id"] == owner.tenant.pk


def test_missing_key(anon_client: APIClient) -> None:
    response = anon_client.get("/v1/account")
    _problem(response, 401, "UNAUTHENTICATED")
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer not-a-key",
        "Basic dXNlcjpwYXNz",
        "Bearer dpp_live_short_00000000",
        "Bearer dpp_prod_" + "A" * 32 + "_00000000",
        "Token " + "dpp_live_" + "A" * 32 + "_00000000",
        "Bearer " + "dpp_live_" + "A" * 32 + "_00000000",  # well formed, bad checksum
    ],
)
def test_malformed_or_bad_checksum_is_rejected_without_a_query(header: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/v1/account")
    _problem(response, 401, "UNAUTHENTICATED")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert len(queries.captured_queries) == 0


def test_unknown_well_formed_key() -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {keys.generate()}")
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/v1/account")
    _problem(response, 401, "UNAUTHENTICATED")
    assert len(queries.captured_queries) == 1  # the lookup by hash, nothing else


def test_revoked_key(owner: Persona) -> None:
    api_key_revoke(key_prefix=keys.prefix(owner.api_key))
    _problem(owner.client.get("/v1/account"), 401, "UNAUTHENTICATED")


def test_suspended_tenant(owner: Persona) -> None:
    assert tenant_set_status(tenant=owner.tenant, status=Tenant.Status.SUSPENDED, actor="test")
    _problem(owner.client.get("/v1/account"), 403, "TENANT_SUSPENDED")


def test_only_the_hash_and_prefix_are_stored(owner: Persona) -> None:
    stored = ApiKey.objects.get(tenant=owner.tenant)
    assert stored.prefix == owner.api_key[:16]
    assert owner.api_key not in (stored.key_hash, stored.label)
    assert stored.key_hash == keys.hash_key(owner.api_key, settings.DPP_API_KEY_PEPPER)


def test_last_used_is_recorded(owner: Persona) -> None:
    assert ApiKey.objects.get(tenant=owner.tenant).last_used_at is None
    owner.client.get("/v1/account")
    assert ApiKey.objects.get(tenant=owner.tenant).last_used_at is not None


def test_revoke_refuses_an_ambiguous_prefix(owner: Persona) -> None:
    from django.core.exceptions import ValidationError

    prefix = owner.api_key[:16]
    ApiKey.objects.create(tenant=owner.tenant, prefix=prefix, key_hash="f" * 64, created_at=timezone.now())
    with pytest.raises(ValidationError, match="several"):
        api_key_revoke(key_prefix=prefix)
    assert ApiKey.objects.filter(prefix=prefix, revoked_at__isnull=True).count() == 2


def test_last_used_read_back_from_sqlite_text_is_aware() -> None:
    """The embedded mode's SQLite hands a raw cursor naive text: the lookup must still compare times."""
    from dpp.http.auth import _aware

    value = _aware("2026-11-25 10:00:00.123456")
    assert value is not None
    assert value.tzinfo is not None
    assert value.isoformat() == "2026-11-25T10:00:00.123456+00:00"
    assert _aware(None) is None
