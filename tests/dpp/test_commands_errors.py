"""Every ops command fails the way docs/operations.md §6 says: exit status 1, one line on stderr, and with `--json`
`{"error": …}` on stdout: for a database it cannot reach and for a usage error alike (real `manage.py` processes)."""

from __future__ import annotations

import json
import subprocess

import pytest
from django.db import connection

from tests.processes import free_port, manage, process_env

# Each ops command with arguments it accepts: it fails only because the database cannot be reached.
COMMANDS = [
    ["audit_ledger"],
    ["reconcile", "--dry-run"],
    ["topup", "acme", "1", "--reason", "r"],
    ["create_tenant", "acme"],
    ["issue_api_key", "acme"],
    ["revoke_api_key", "dpp_live_ABCDEFG"],
    ["set_plan", "acme", "unlimited", "--reason", "r"],
    ["seed_demo"],
    ["unlock_login", "fiona"],
]


def _closed_database_url(password: str = "", name: str = "dpp") -> str:
    auth = f"postgres:{password}" if password else "postgres"
    return f"postgres://{auth}@127.0.0.1:{free_port()}/{name}"  # nothing listens on a port just freed


def _run(args: list[str], database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = process_env(DATABASE_URL=database_url or _closed_database_url())
    return manage(args, env, timeout=60, check=False)


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """Exit status 1 and a single line on stderr, without a traceback: that line."""
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("args", COMMANDS, ids=[args[0] for args in COMMANDS])
def test_an_unreachable_database_is_one_line_and_a_json_error(args: list[str]) -> None:
    done = _run([*args, "--json"])
    line = _one_line_error(done)
    assert "the database is unreachable: " in line
    body = json.loads(done.stdout)  # exactly one JSON object on stdout
    assert set(body) == {"error"}
    assert body["error"].startswith("the database is unreachable: ")
    assert "Connection refused" in body["error"]


def test_without_json_stdout_stays_empty() -> None:
    done = _run(["audit_ledger"])
    assert _one_line_error(done).startswith("CommandError: the database is unreachable: ")
    assert done.stdout == ""


def test_the_database_password_is_never_printed() -> None:
    # The test server answers, refusing a user spelt like the password: its message would echo the password.
    secret = "hunter2-not-printed"
    host, port = connection.settings_dict["HOST"] or "127.0.0.1", connection.settings_dict["PORT"] or 5432
    done = _run(["audit_ledger", "--json"], f"postgres://{secret}:{secret}@{host}:{port}/{secret}")
    line = _one_line_error(done)
    assert "the database is unreachable" in line
    assert secret not in done.stdout + done.stderr
    assert "***" in json.loads(done.stdout)["error"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["topup", "acme", "1"], "the following arguments are required: --reason"),
        (["create_tenant"], "the following arguments are required: tenant_id"),
        (["reconcile", "--bogus"], "unrecognized arguments: --bogus"),
        # Longer than the column that stores it: refused before any database is asked.
        (
            ["topup", "acme", "1", "--reason", "r", "--actor", "a" * 151],
            "argument --actor: at most 150 characters, got 151",
        ),
        (
            ["set_plan", "acme", "unlimited", "--reason", "r", "--actor", "a" * 151],
            "argument --actor: at most 150 characters, got 151",
        ),
        (["issue_api_key", "acme", "--label", "l" * 101], "argument --label: at most 100 characters, got 101"),
        (["create_tenant", "acme", "--name", "n" * 201], "argument --name: at most 200 characters, got 201"),
    ],
)
def test_a_usage_error_is_exit_1_and_a_json_error(args: list[str], message: str) -> None:
    done = _run([*args, "--json"])
    line = _one_line_error(done)
    assert line == f"CommandError: {message} (see manage.py {args[0]} --help)"
    assert json.loads(done.stdout) == {"error": message}


def test_a_usage_error_without_json_prints_nothing_on_stdout() -> None:
    done = _run(["create_tenant"])
    assert "tenant_id" in _one_line_error(done)
    assert done.stdout == ""


def test_help_still_works() -> None:
    done = _run(["topup", "--help"])
    assert done.returncode == 0, done.stderr
    assert "--reason" in done.stdout
    assert "usage: manage.py topup" in done.stdout


@pytest.mark.parametrize("json_flag", [["--json"], []])
def test_a_bad_environment_variable_is_one_line_naming_it(json_flag: list[str]) -> None:
    done = manage(["audit_ledger", *json_flag], process_env(DPP_LEASE_S="abc"), timeout=60, check=False)
    assert _one_line_error(done) == "ImproperlyConfigured: DPP_LEASE_S='abc' is not an integer"
    assert done.stdout == ('{"error": "DPP_LEASE_S=\'abc\' is not an integer"}\n' if json_flag else "")
