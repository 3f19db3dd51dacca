"""API key format, generation and hashing (SPEC §4): pure functions, no database.

Format: `dpp_live_<32 base62>_<8 hex>` (or `dpp_test_…`), the suffix being the CRC32 of the 32-character
random part in lowercase hex. A key that fails `parse` is rejected before any database query.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib

_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
_KEY_RE = re.compile(r"dpp_(live|test)_([0-9A-Za-z]{32})_([0-9a-f]{8})")
PREFIX_LENGTH = 16  # "dpp_live_" + 7 characters of the random part


def _checksum(random_part: str) -> str:
    return f"{zlib.crc32(random_part.encode('ascii')) & 0xFFFFFFFF:08x}"


def generate(environment: str = "live") -> str:
    """A new random key; the caller shows it once and stores only `hash_key(key)` and `prefix(key)`."""
    if environment not in ("live", "test"):
        raise ValueError(f"unknown key environment {environment!r}")
    random_part = "".join(secrets.choice(_ALPHABET) for _ in range(32))
    return f"dpp_{environment}_{random_part}_{_checksum(random_part)}"


def is_well_formed(key: str) -> bool:
    """True when the key has the documented format and its checksum matches (no database involved)."""
    match = _KEY_RE.fullmatch(key)
    if match is None:
        return False
    return hmac.compare_digest(_checksum(match.group(2)), match.group(3))


def hash_key(key: str, pepper: str) -> str:
    return hmac.new(pepper.encode("utf-8"), key.encode("ascii"), hashlib.sha256).hexdigest()


def prefix(key: str) -> str:
    return key[:PREFIX_LENGTH]
