"""The only place that lists the packs: name -> stateless singleton, in a stable order."""

from __future__ import annotations

from packs.base import Pack
from packs.decision import DecisionPack
from packs.diagnostic import DiagnosticPack
from packs.url import UrlPack

_PACKS: dict[str, Pack] = {pack.pack_type: pack for pack in (DecisionPack(), UrlPack(), DiagnosticPack())}


def get_pack(pack_type: str) -> Pack | None:
    """The pack registered under ``pack_type``, or None."""
    return _PACKS.get(pack_type)


def all_packs() -> list[Pack]:
    """Every pack, in catalog order: decision, url, diagnostic."""
    return list(_PACKS.values())
