"""Shared fixtures: real PostgreSQL and Redis (never mocked), tenants with keys and money, API clients."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from django.db import connection
from rest_framework.test import APIClient

from billing.bootstrap import ensure_platform_rows
from billing.models import Account, Plan
from billing.selectors import plan_cache_clear
from billing.services import ledger_topup, tenant_onboard
from dpp.db.redis import get_redis
from dpp.http.ratelimit import ANONYMOUS_POLICY, bucket_key
from dpp.models import Tenant
from dpp.services import api_key_issue
from runs.results import results_folder_mark

USD = 1_000_000


@pytest.fixture(scope="session", autouse=True)
def _real_services(django_db_setup: None, django_db_blocker: pytest.FixtureRequest) -> None:
    """The suite runs on PostgreSQL and Redis, as production does: `make test` finds or starts them."""
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        if connection.vendor != "postgresql":
            pytest.exit("the tests need PostgreSQL and Redis: run `make test` (or set DATABASE_URL and REDIS_URL)", 2)
    if get_redis() is None:
        pytest.exit("the tests need Redis: run `make test` (or set REDIS_URL)", 2)
    results_folder_mark()  # the suite stores and reaps envelopes in process: what a worker does when it starts


@pytest.fixture(autouse=True)
def _platform_rows(request: pytest.FixtureRequest) -> None:
    """A transactional test flushes every table, data-migration rows included: put them back first."""
    uses_db = request.node.get_closest_marker("django_db") or {"db", "transactional_db"} & set(request.fixturenames)
    plan_cache_clear()  # plan ids are reused across flushed tests: a cached definition must not outlive its row
    if uses_db:
        request.getfixturevalue("_django_db_helper")
        ensure_platform_rows(Plan, Account)


@pytest.fixture(autouse=True)
def _full_anonymous_bucket() -> None:
    """The suite's requests without a (good) key all come from 127.0.0.1: each test starts with a full bucket."""
    client = get_redis()
    if client is not None:
        client.delete(bucket_key(ANONYMOUS_POLICY, "127.0.0.1"))


@dataclass
class Persona:
    tenant: Tenant
    api_key: str
    client: APIClient


def unique_tenant_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_persona(*, plan: str = "starter", credit_micros: int = 10 * USD, prefix: str = "t") -> Persona:
    """A tenant on `plan` with `credit_micros` available and an API client authenticated as it."""
    tenant = tenant_onboard(tenant_id=unique_tenant_id(prefix), plan_code=plan, actor="test")
    if credit_micros:
        ledger_topup(tenant=tenant, amount_micros=credit_micros, actor="test", reason="test credit")
    issued = api_key_issue(tenant=tenant, label="test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    return Persona(tenant=tenant, api_key=issued.secret, client=client)


@dataclass
class Personas:
    owner: Persona  # the tenant whose resources a test looks at
    other: Persona  # a second paying tenant: must never see the owner's resources
    outsider: Persona  # a tenant with no money and no runs


@pytest.fixture
def personas(db: None) -> Personas:
    return Personas(
        owner=make_persona(prefix="owner"),
        other=make_persona(prefix="other"),
        outsider=make_persona(prefix="outsider", credit_micros=0),
    )


@pytest.fixture
def owner(personas: Personas) -> Persona:
    return personas.owner


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


@pytest.fixture
def redis_client() -> object:
    client = get_redis()
    assert client is not None
    return client
