"""`manage.py create_staff_user`: a staff login in the finance or ops group that can use the admin at once."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client

from tests.helpers.admin import ensure_staff_groups
from tests.helpers.children import python_child
from tests.processes import process_env

PASSWORD = "correct horse battery staple"


def _create(*args: str) -> dict[str, object]:
    out = io.StringIO()
    call_command("create_staff_user", *args, "--json", stdout=out)
    payload: dict[str, object] = json.loads(out.getvalue())
    return payload


@pytest.mark.django_db
@pytest.mark.parametrize("group", ["finance", "ops"])
def test_a_staff_user_in_its_group_logs_in_to_the_admin(tmp_path: Path, group: str) -> None:
    ensure_staff_groups()
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    made = _create("ann", "--group", group, "--email", "ann@example.com", "--password-file", str(secret))
    assert made == {"username": "ann", "group": group, "email": "ann@example.com", "is_staff": True}
    user = User.objects.get(username="ann")
    assert (user.is_staff, user.is_superuser, [g.name for g in user.groups.all()]) == (True, False, [group])
    client = Client()
    assert client.login(username="ann", password=PASSWORD)  # the file's first line, without its line end
    response = client.get("/admin/")
    assert response.status_code == 200
    assert b"Tenants" in response.content or b"Billing" in response.content
    if group == "finance":
        assert (user.has_perm("billing.topup"), user.has_perm("reaper.reconcile")) == (True, False)
    else:
        assert (user.has_perm("billing.topup"), user.has_perm("reaper.reconcile")) == (False, True)


@pytest.mark.django_db
def test_refusals_create_nothing(tmp_path: Path) -> None:
    ensure_staff_groups()
    short = tmp_path / "short"
    short.write_text("abc\n")
    good = tmp_path / "good"
    good.write_text(PASSWORD)
    User.objects.create_user(username="taken", password=PASSWORD)
    for args, message in (
        (["bob", "--group", "finance", "--password-file", str(short)], "too short"),
        (["taken", "--group", "ops", "--password-file", str(good)], "exists already"),
        (["bob", "--group", "admin", "--password-file", str(good)], "invalid choice"),
        (["bob", "--group", "ops", "--password-file", str(tmp_path / "missing")], "cannot read --password-file"),
        (["bob", "--group", "ops", "--email", "not-an-address", "--password-file", str(good)], "valid email"),
    ):
        with pytest.raises(CommandError, match=message):
            _create(*args)
    assert not User.objects.filter(username="bob").exists()


@pytest.mark.django_db(transaction=True)
def test_the_password_is_prompted_for_twice() -> None:
    ensure_staff_groups()
    env = process_env()
    # A new session has no terminal: getpass reads the two answers from stdin, as a prompt would from the keyboard.
    done = manage_with_input(["create_staff_user", "carol", "--group", "finance", "--json"], env, f"{PASSWORD}\n" * 2)
    assert json.loads(done.splitlines()[-1])["username"] == "carol"
    assert Client().login(username="carol", password=PASSWORD)
    with pytest.raises(RuntimeError, match="the two passwords differ"):
        manage_with_input(["create_staff_user", "dave", "--group", "ops"], env, f"{PASSWORD}\nsomething else\n")
    assert not User.objects.filter(username="dave").exists()


def manage_with_input(args: list[str], env: dict[str, str], stdin: str) -> str:
    """`manage.py <args>` in a new session (no controlling terminal) with `stdin`; its stdout."""
    done = python_child(["manage.py", *args], env, stdin=stdin, new_session=True)
    if done.returncode != 0:
        raise RuntimeError(done.stdout + done.stderr)
    return done.stdout
