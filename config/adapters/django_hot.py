"""Statements on the hot paths, prepared once per connection on PostgreSQL.

Django's psycopg backend binds parameters on the client by default: PostgreSQL parses and plans every statement
anew, which for a submit cost more CPU than executing it (measured: 1.3 ms of backend CPU per submit with
client-side binding, 0.7 ms with prepared statements; docs/BENCHMARKS.md). Turning on the backend's
`server_side_binding` is not safe for money: Django then types an `int` by its field (`F("balance_micros") + 10**12`
is sent as an int4 and wraps around; docs/decisions.md). So the ORM keeps client-side binding, and only the
statements written here for the hot paths go through `hot_cursor()`: a server-side-binding psycopg cursor, whose
statements psycopg prepares on their fifth execution on a connection. Their SQL casts every parameter whose type
matters; plain Python ints are sent as the smallest integer type that holds them, never truncated.

The cursor is wrapped like any Django cursor: same connection and transaction, database errors translated,
queries counted by `django_assert_num_queries` and logged under DEBUG. On SQLite it is an ordinary cursor. Rows
of those statements become model instances through `RowReader`, which does once what `Model.objects.raw()` does
on every query (Django's compiler's converters, `Model.from_db`).

What of Django it relies on: `BaseDatabaseWrapper._prepare_cursor`'s wrapping (copied in `hot_cursor`), and the
SQL compiler's private `get_converters` / `apply_converters`. Upstream: Django has no prepared statements for the
ORM, and we found no ticket or PR proposing them; its `server_side_binding` option (Django 4.2, psycopg 3) binds
integers typed by their field (`DatabaseOperations.adapt_integerfield_value`, from the review of django/django#15687,
psycopg 3 support), hence the int4 wrap-around above. Nothing upstream to wait for: this stays while it pays.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from django.db.models import Model

from config.adapters import WrittenAgainst

WRITTEN_AGAINST = WrittenAgainst(
    distribution="Django",
    version="5.2.19",
    sources={
        "django.db.backends.base.base.BaseDatabaseWrapper._prepare_cursor": (
            "92079d0eed95d59d4d770845075e27b7f7e3034331b95aec778b7cfcdca64cb2"
        ),
        "django.db.backends.base.base.BaseDatabaseWrapper._cursor": (
            "bb632516d005185c3f44250b3224b6cfbc0a8869ab80d1a045a78a62e11cc347"
        ),
        "django.db.models.sql.compiler.SQLCompiler.get_converters": (
            "c6c8c1b71882ee8b32e52cd3bd808d12f1b164dbe9cca6aca30cf3375f34506c"
        ),
        "django.db.models.sql.compiler.SQLCompiler.apply_converters": (
            "c034ce3e5090aa2edcc603fbac1ca413c7d6ba4fd850f7c3437665e9d4412715"
        ),
        "django.db.models.base.Model.from_db": "eba347895d11fa79360f63faaf121f62a8d9e10888ccff9a0441c535b2823295",
        "django.db.models.query.RawModelIterable.__iter__": (
            "1b6881e6506101f3f17f6eba5b471b6e2adf8b50a611b0ba3dd07291dd93d6d8"
        ),
    },
)


@contextlib.contextmanager
def hot_cursor() -> Iterator[CursorWrapper]:
    """A cursor of the default connection whose statements PostgreSQL prepares (see the module's docstring)."""
    db = connections[DEFAULT_DB_ALIAS]  # the wrapper itself: `connection` is a proxy, each attribute a lookup
    if db.vendor != "postgresql":
        with db.cursor() as plain:
            yield plain
        return
    # What db.cursor() does first, so a hot statement that opens a request is health-checked the same way.
    db.close_if_health_check_failed()
    db.ensure_connection()
    with db.wrap_database_errors:
        raw = psycopg.Cursor(db.connection)
    # Django's own wrapping, as in BaseDatabaseWrapper._prepare_cursor.
    db.validate_thread_sharing()
    cursor = (CursorDebugWrapper if db.queries_logged else CursorWrapper)(raw, db)
    with cursor:
        yield cursor


class RowReader:
    """Model instances from rows of hand-written SQL, for the hot reads: what `Model.objects.raw()` does, with the
    work it repeats on every query (resolving columns from the cursor's description, finding each field's
    converters) done once. A row holds `fields` in the model's field order (`columns()` writes that list), then
    any extra columns, which become attributes named in `extras`. Fields not read load on access, as deferred."""

    def __init__(self, model: type[Model], fields: tuple[str, ...], extras: tuple[str, ...] = ()) -> None:
        wanted = set(fields)
        self.model = model
        self.fields = tuple(f for f in model._meta.concrete_fields if f.name in wanted)
        if len(self.fields) != len(wanted):
            raise ValueError(f"{model.__name__}: unknown fields {sorted(wanted - {f.name for f in self.fields})}")
        self.attnames = frozenset(f.attname for f in self.fields)
        self.extras = extras

    def columns(self, alias: str) -> str:
        """The SELECT list of the fields, each column qualified by the table's `alias`."""
        return ", ".join(f"{alias}.{connection.ops.quote_name(str(f.column))}" for f in self.fields)

    def instance(self, row: tuple[Any, ...] | None) -> Model | None:
        if row is None:
            return None
        db = connections[DEFAULT_DB_ALIAS]
        compiler, converters = self._converters(db.vendor)
        values = next(compiler.apply_converters([row], converters)) if converters else row
        count = len(self.fields)
        instance = self.model.from_db(db.alias, self.attnames, values[:count])
        for name, value in zip(self.extras, values[count:], strict=True):
            setattr(instance, name, value)
        return instance

    @functools.cache  # noqa: B019 - one per reader and vendor; readers are module constants
    def _converters(self, vendor: str) -> tuple[Any, dict[int, Any]]:
        from django.db.models.sql import Query

        db = connections[DEFAULT_DB_ALIAS]
        compiler = db.ops.compiler("SQLCompiler")(Query(self.model), db, db.alias)
        return compiler, compiler.get_converters([f.get_col(self.model._meta.db_table) for f in self.fields])
