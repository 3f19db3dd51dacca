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
queries counted by `django_assert_num_queries` and logged under DEBUG. On SQLite it is an ordinary cursor.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from django.db.models import Field, Model


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


def insert_new(instance: Model) -> None:
    """INSERT a new row with every concrete field, as `save(force_insert=True)` would for a model with its primary
    key set, no auto_now fields and no signal receivers — through one statement per model built once, on the hot
    cursor. The caller's transaction holds it."""
    sql, fields = _insert_statement(type(instance), connection.vendor)
    params = [_plain(field.get_db_prep_save(field.pre_save(instance, add=True), connection)) for field in fields]
    with hot_cursor() as cursor:
        cursor.execute(sql, params)
    instance._state.adding = False  # what Model.save sets
    instance._state.db = connection.alias


@functools.cache
def _insert_statement(model: type[Model], vendor: str) -> tuple[str, tuple[Field[Any, Any], ...]]:
    fields = tuple(model._meta.concrete_fields)
    for field in fields:
        # What the cached statement cannot do for a field: fill an auto field, take a placeholder of its own.
        if field.primary_key and getattr(field, "db_returning", False):
            raise TypeError(f"{model.__name__}.{field.name}: insert_new needs the primary key set by the caller")
        automatic = getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)
        if automatic or hasattr(field, "get_placeholder"):
            raise TypeError(f"{model.__name__}.{field.name}: not supported by insert_new")
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(field.column)) for field in fields)
    sql = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"  # noqa: S608
    return sql, fields


def _plain(value: Any) -> Any:
    """Django types an integer by its field (psycopg's Int2/Int4, which wrap around out of range when bound on the
    server); a plain int is bound as the smallest type that holds it, and the column refuses what does not fit."""
    if isinstance(value, int) and type(value) not in (int, bool):
        return int(value)
    return value


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
