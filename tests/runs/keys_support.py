"""Helpers of the agent-key tests (SPEC §8): a tenant's first key that may manage keys, keys below it, clients."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rest_framework.test import APIClient

from dpp.models import ApiKey
from dpp.services import IssuedKey, KeyLimits, api_key_issue
from tests.conftest import Persona


@dataclass
class Key:
    secret: str
    prefix: str
    client: APIClient

    @property
    def row(self) -> ApiKey:
        return ApiKey.objects.get(prefix=self.prefix)


def client_for(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def as_key(issued: IssuedKey) -> Key:
    return Key(secret=issued.secret, prefix=issued.api_key.prefix, client=client_for(issued.secret))


def root_key(persona: Persona, **options: Any) -> Key:
    """A first key of the tenant that may manage keys (what create_tenant prints)."""
    return as_key(api_key_issue(tenant=persona.tenant, label="root", can_manage_keys=True, **options))


def child_key(parent: Key, *, can_manage_keys: bool = False, **limits: Any) -> Key:
    """A key below `parent`, made by the service (limits as KeyLimits fields, in micros)."""
    row = parent.row
    issued = api_key_issue(
        tenant=row.tenant, parent=row, limits=KeyLimits(**limits), can_manage_keys=can_manage_keys, label="child"
    )
    return as_key(issued)


def post_key(parent: Key, body: dict[str, Any]) -> Any:
    return parent.client.post("/v1/keys", data=json.dumps(body), content_type="application/json")


def patch_key(caller: Key, prefix: str, body: dict[str, Any]) -> Any:
    return caller.client.patch(f"/v1/keys/{prefix}", data=json.dumps(body), content_type="application/json")
