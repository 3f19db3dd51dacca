"""A base for ops commands: `--json` prints one JSON object on stdout; every error is one line and exit status 1.

A command's docstring is its help, and its `arguments` are declared as data (`Arg`), as click's commands are.

An error is one line on stderr and, with `--json`, `{"error": "<message>"}` on stdout (docs/operations.md §6):
a refusal of the command itself, a usage error (argparse's exit status 2 and usage text would break a script
that parses stdout), and a database error reaching the top (an unreachable server, an overflow) alike.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, InterfaceError, OperationalError, models

from dpp.http.errors import ApplicationError
from dpp.models import Tenant

# SQLSTATE classes of a server that cannot be reached or is going away: 08 connection exception,
# 57P admin shutdown / cannot connect now. A failure to connect has no SQLSTATE at all.
_UNREACHABLE_SQLSTATES = ("08", "57P")


class Arg:
    """One argument of a command, as argparse's `add_argument` takes it."""

    def __init__(self, *names: str, **options: Any) -> None:
        self.names = names
        self.options = options


class DppCommand(BaseCommand):
    as_json = False
    # The command's own arguments, after --json which every command takes.
    arguments: tuple[Arg, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__doc__:  # the docstring as one line, as argparse shows it
            cls.help = " ".join(cls.__doc__.split())

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        for argument in self.arguments:
            parser.add_argument(*argument.names, **argument.options)

    def run_from_argv(self, argv: list[str]) -> None:
        self.as_json = "--json" in argv[2:]
        # Parse once before Django does: its parser, called from the command line, prints the usage and exits 2.
        # Told it is not, it raises CommandError("Error: <argparse's message>"); --help still prints and exits 0.
        parser = self.create_parser(argv[0], argv[1])
        parser.called_from_command_line = False
        try:
            parser.parse_args(argv[2:])
        except CommandError as exc:
            message = str(exc).removeprefix("Error: ")
            if self.as_json:
                self.stdout.write(json.dumps({"error": message}))
            self.stderr.write(f"CommandError: {message} (see {parser.prog} --help)")
            sys.exit(1)
        super().run_from_argv(argv)

    def handle(self, *args: Any, **options: Any) -> None:
        self.as_json = bool(options["json"])
        try:
            self.run(**options)
        except ValidationError as exc:
            self.fail("; ".join(exc.messages))
        except ApplicationError as exc:
            self.fail(exc.detail)
        except DatabaseError as exc:
            self.fail(database_error_line(exc))

    def run(self, **options: Any) -> None:
        raise NotImplementedError

    def emit(self, payload: dict[str, Any], text: str) -> None:
        """The answer: JSON for machines, or a human sentence."""
        self.stdout.write(json.dumps(payload, cls=DjangoJSONEncoder) if self.as_json else text)

    def fail(self, message: str, code: int = 1) -> NoReturn:
        if self.as_json:
            self.stdout.write(json.dumps({"error": message}))
        raise CommandError(message, returncode=code)


class TenantCommand(DppCommand):
    """A command on one existing tenant, named by its first argument: an unknown id fails before anything is done."""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("tenant_id")
        super().add_arguments(parser)

    def run(self, **options: Any) -> None:
        tenant = Tenant.objects.filter(pk=options["tenant_id"]).first()
        if tenant is None:
            self.fail(f"no tenant {options['tenant_id']!r}")
        self.run_for(tenant, **options)

    def run_for(self, tenant: Tenant, **options: Any) -> None:
        raise NotImplementedError


def fits(model: type[models.Model], field: str) -> Callable[[str], str]:
    """An argparse `type` for a value stored in `model.field`: a value longer than its column is a usage error
    naming the limit, not a database error after the fact."""
    limit: int | None = getattr(model._meta.get_field(field), "max_length", None)

    def check(value: str) -> str:
        if limit is not None and len(value) > limit:
            raise argparse.ArgumentTypeError(f"at most {limit} characters, got {len(value)}")
        return value

    return check


def actor_option(model: type[models.Model], recorded: str) -> Arg:
    """`--actor`, kept in `model.actor`: who asks for the change (`actor` gives the default)."""
    return Arg(
        "--actor",
        type=fits(model, "actor"),
        help=f"who asks for it, recorded {recorded} (default: cli:<your login name>)",
    )


def actor(given: str | None) -> str:
    """Who asks, for the records a command writes: `--actor` as given (an empty one is refused where it is
    recorded), else `cli:<login name>` of whoever runs the command (`cli` if the system knows none)."""
    if given is not None:
        return given
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name in the environment and none for the uid
        return "cli"


def database_error_line(exc: DatabaseError) -> str:
    """What went wrong, in one line: the driver's first line, with no database password in it."""
    lines = str(exc).strip().splitlines()
    first = lines[0].strip() if lines else type(exc).__name__
    for database in settings.DATABASES.values():
        if database.get("PASSWORD"):
            first = first.replace(str(database["PASSWORD"]), "***")
    if _unreachable(exc):
        return f"the database is unreachable: {first}"
    return f"the database refused the command ({type(exc).__name__}): {first}"


def _unreachable(exc: DatabaseError) -> bool:
    """The server could not be reached or went away, as opposed to a statement it refused (a deadlock, a timeout)."""
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    cause = exc.__cause__
    sqlite_error = getattr(cause, "sqlite_errorname", None)
    if sqlite_error is not None:  # the embedded mode's SQLite: only a file it cannot open
        return bool(sqlite_error == "SQLITE_CANTOPEN")
    sqlstate: str = getattr(cause, "sqlstate", None) or ""  # psycopg: none when connecting fails
    return not sqlstate or sqlstate.startswith(_UNREACHABLE_SQLSTATES)
