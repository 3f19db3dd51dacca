"""The admin as staff use it: users in their groups, logged-in clients, CSV downloads."""

from __future__ import annotations

import csv
import importlib
import io
from collections.abc import Iterable, Iterator
from types import SimpleNamespace
from typing import Any

from django.apps import apps
from django.contrib.auth.models import Group, User
from django.db import connection
from django.http import StreamingHttpResponse
from django.test import Client


def ensure_staff_groups() -> None:
    """The groups of migration billing 0005, put back if a transactional test flushed them (it is idempotent)."""
    migration = importlib.import_module("billing.migrations.0005_staff_groups")
    migration.create_groups(apps, SimpleNamespace(connection=connection))


def staff_client(username: str, *, groups: Iterable[str] = (), superuser: bool = False) -> Client:
    """A logged-in admin client for a staff user in `groups`."""
    if superuser:
        user = User.objects.create_superuser(username=username, email=f"{username}@example.com", password=None)
    else:
        user = User.objects.create_user(username=username, is_staff=True)
    for name in groups:
        user.groups.add(Group.objects.get(name=name))
    client = Client()
    client.force_login(user)
    return client


def csv_rows(response: Any) -> list[dict[str, str]]:
    """The rows of a streamed CSV download, by header."""
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"].startswith("text/csv")
    chunks = response.streaming_content
    assert isinstance(chunks, Iterator)  # a sync view: never an async iterator
    body = b"".join(chunks).decode()
    return list(csv.DictReader(io.StringIO(body)))
