"""The admin as staff use it: users in their groups, logged-in clients, CSV downloads."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any

from django.apps import apps
from django.contrib.auth.models import Group, User
from django.db import connection
from django.http import StreamingHttpResponse
from django.test import Client

from billing import bootstrap


def ensure_staff_groups() -> None:
    """The groups of migration billing 0002, put back if a transactional test flushed them (it is idempotent)."""
    bootstrap.ensure_staff_groups(apps, connection.alias)


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
