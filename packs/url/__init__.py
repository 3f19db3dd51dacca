"""The ``url`` pack: an SSRF-safe fetcher (see ``pack``, ``client``, ``addresses``)."""

from packs.url.pack import UrlPack, blocked_literal, byte_cap, price_micros

__all__ = ["UrlPack", "blocked_literal", "byte_cap", "price_micros"]
