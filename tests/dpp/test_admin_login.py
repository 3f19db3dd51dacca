"""Admin login throttling (SPEC §13): 10 failures per user name and 100 per client address within 15 minutes lock
the login for 15 minutes, even with the right password; `unlock_login` lifts it. Real POSTs to /admin/login/."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from freezegun import freeze_time

from dpp.models import AdminLoginFailure

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"
PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _fast_hashes(settings: object) -> None:
    # Every failed login hashes the typed password (Django's timing guard): MD5 keeps 100+ attempts fast.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # type: ignore[attr-defined]


@pytest.fixture
def finance_user() -> User:
    return User.objects.create_user(username="fiona", password=PASSWORD, is_staff=True)


def _login(client: Client, username: str, password: str, address: str = "203.0.113.7") -> tuple[bool, str]:
    """Whether the login succeeded (a redirect into the admin) and the page's text otherwise."""
    response = client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address)
    if response.status_code == 302:
        return True, ""
    assert response.status_code == 200
    return False, response.content.decode()


def _fail(client: Client, username: str, times: int, address: str = "203.0.113.7") -> None:
    for _ in range(times):
        ok, page = _login(client, username, "wrong", address)
        assert not ok
        assert "Please enter the correct username and password" in page


def test_the_eleventh_attempt_is_refused_even_with_the_right_password(finance_user: User) -> None:
    client = Client()
    _fail(client, "fiona", 10)
    ok, page = _login(client, "fiona", PASSWORD)
    assert not ok
    assert "Too many failed logins for this user name" in page
    assert "unlock_login" in page
    assert AdminLoginFailure.objects.filter(username="fiona").count() == 10  # the refused attempt is not counted
    # Another user from the same address is not locked.
    User.objects.create_user(username="gina", password=PASSWORD, is_staff=True)
    assert _login(Client(), "gina", PASSWORD)[0]


def test_nine_failures_do_not_lock(finance_user: User) -> None:
    client = Client()
    _fail(client, "fiona", 9)
    assert _login(client, "fiona", PASSWORD)[0]


def test_the_lock_ends_after_fifteen_minutes(finance_user: User) -> None:
    start = timezone.now()
    with freeze_time(start) as clock:
        client = Client()
        _fail(client, "fiona", 10)
        clock.tick(timedelta(minutes=14, seconds=59))
        assert not _login(client, "fiona", PASSWORD)[0]
        clock.tick(timedelta(seconds=2))
        assert _login(client, "fiona", PASSWORD)[0]


def test_failures_spread_over_more_than_the_window_do_not_lock(finance_user: User) -> None:
    start = timezone.now()
    with freeze_time(start) as clock:
        client = Client()
        for _ in range(10):
            _fail(client, "fiona", 1)
            clock.tick(timedelta(minutes=2))  # 10 failures over 18 minutes: never 10 within 15
        assert _login(client, "fiona", PASSWORD)[0]


def test_unlock_login_lifts_the_lock_at_once(finance_user: User) -> None:
    client = Client()
    _fail(client, "fiona", 10)
    assert not _login(client, "fiona", PASSWORD)[0]
    out = StringIO()
    call_command("unlock_login", "fiona", "--json", stdout=out)
    assert json.loads(out.getvalue()) == {"username": "fiona", "address": None, "failures_cleared": 10}
    assert _login(client, "fiona", PASSWORD)[0]
    assert AdminLoginFailure.objects.filter(username="fiona", cleared_at__isnull=False).count() == 10


def test_one_address_is_locked_after_a_hundred_failures_over_many_user_names(finance_user: User) -> None:
    client = Client()
    for number in range(99):
        _fail(client, f"guess{number}", 1, address="198.51.100.9")
    assert _login(client, "fiona", PASSWORD, address="198.51.100.9")[0]  # 99: not yet
    client = Client()
    _fail(client, "guess99", 1, address="198.51.100.9")
    ok, page = _login(client, "fiona", PASSWORD, address="198.51.100.9")
    assert not ok
    assert "Too many failed logins for your address" in page
    assert _login(Client(), "fiona", PASSWORD, address="198.51.100.10")[0]  # another address is not locked
    call_command("unlock_login", "nobody", "--address", "198.51.100.9", stdout=StringIO())
    assert _login(Client(), "fiona", PASSWORD, address="198.51.100.9")[0]


def test_attempts_are_logged(finance_user: User, caplog: pytest.LogCaptureFixture) -> None:
    client = Client()
    with caplog.at_level(logging.WARNING, logger="dpp.admin_login"):
        _fail(client, "fiona", 10)
        _login(client, "fiona", PASSWORD)
    failed = [record for record in caplog.records if record.getMessage().startswith("admin login failed")]
    refused = [record for record in caplog.records if record.getMessage().startswith("admin login refused")]
    assert len(failed) == 10
    assert len(refused) == 1
    assert failed[-1].__dict__["user_failures"] == 10
    assert refused[0].__dict__["client_address"] == "203.0.113.7"


def test_a_nul_byte_or_a_huge_user_name_is_a_failed_login_not_a_500() -> None:
    client = Client()
    for username in ("ad\x00min", "x" * 500):
        ok, page = _login(client, username, "wrong")
        assert not ok
        assert "errornote" in page
    # The form refuses a NUL before authenticating; the long name failed and is counted under its first 150.
    assert list(AdminLoginFailure.objects.values_list("username", flat=True)) == ["x" * 150]
