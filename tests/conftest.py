"""Shared fixtures: real PostgreSQL and Redis (never mocked), tenants with keys and money, API clients.

Fixtures only: what they are made with lives in tests/helpers/."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from billing.bootstrap import ensure_platform_rows
from billing.models import Account, Plan
from billing.selectors import plan_cache_clear
from dpp.db.redis import get_redis
from dpp.http.ratelimit import ANONYMOUS_POLICY, bucket_key
from runs.results import results_folder_mark
from tests.helpers.admin import ensure_staff_groups, staff_client
from tests.helpers.personas import Persona, Personas, make_persona


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


@pytest.fixture
def finance(db: None) -> Client:
    """An admin client of a staff user in the finance group (moves money, reads everything)."""
    ensure_staff_groups()
    return staff_client("alice", groups=["finance"])


@pytest.fixture
def ops(db: None) -> Client:
    """An admin client of a staff user in the ops group (reads, runs the reaper)."""
    ensure_staff_groups()
    return staff_client("olga", groups=["ops"])


@pytest.fixture
def root(db: None) -> Client:
    """An admin client of a superuser."""
    return staff_client("root", superuser=True)
