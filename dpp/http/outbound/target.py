"""Parsing a URL an outbound request (the ``url`` pack, a webhook) may go to, strictly, once; every later step
uses the result.

Guarantees: the scheme is ``https`` (or ``http`` when allowed); there are no credentials, no
whitespace, control characters or backslashes (where URL parsers disagree); the host is either an IP
literal (``address`` set, any form ``addresses.parse_ip_literal`` reads) or an ASCII DNS name (IDNA
applied); the port is 1..65535; the request target is percent-encoded ASCII.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import SplitResult, quote, urlsplit

from dpp.http.outbound.addresses import IPAddress, parse_ip_literal

MAX_URL_CHARS = 8192  # for redirect targets; a submitted URL is limited to 2048 by the schema
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAME = re.compile(r"[a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})*\.?")
# Characters kept as they are in a request target: RFC 3986 reserved, unreserved, and "%" escapes.
_TARGET_SAFE = "/:@!$&'()*+,;=-._~%?[]"


class InvalidUrlError(ValueError):
    """A URL the pack refuses to request; the message says why."""


@dataclass(frozen=True)
class Target:
    url: str  # as reported: the URL without its fragment
    scheme: str
    host: str  # ASCII lowercase name, or the literal's canonical address text
    port: int
    address: IPAddress | None  # the literal address, None for a DNS name
    request_target: str

    @property
    def tls_name(self) -> str:
        """The name the certificate must match (and SNI, for a DNS name)."""
        return self.host.rstrip(".")


def parse_target(url: str, *, allow_http: bool) -> Target:
    """The target of ``url``, or InvalidUrlError."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidUrlError(f"URL longer than {MAX_URL_CHARS} characters")
    if any(char == "\\" or ord(char) <= 32 or ord(char) == 127 for char in url):
        raise InvalidUrlError("URL contains whitespace, control characters or a backslash")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidUrlError(f"malformed URL: {exc}") from None
    scheme = _checked_scheme(parts.scheme.lower(), allow_http=allow_http)
    if "@" in parts.netloc:
        raise InvalidUrlError("credentials in the URL are refused")
    host, address = _host(parts)
    if port == 0:
        raise InvalidUrlError("port 0 is not a valid port")
    path = quote(parts.path or "/", safe=_TARGET_SAFE)
    query = "?" + quote(parts.query, safe=_TARGET_SAFE) if parts.query else ""
    return Target(
        url=parts._replace(fragment="").geturl(),
        scheme=scheme,
        host=host,
        port=port or _DEFAULT_PORTS[scheme],
        address=address,
        request_target=path + query,
    )


def _checked_scheme(scheme: str, *, allow_http: bool) -> str:
    if scheme == "https" or (scheme == "http" and allow_http):
        return scheme
    if scheme == "http":
        raise InvalidUrlError("http is not allowed: https only")
    raise InvalidUrlError(f"scheme {scheme!r} is not allowed: https only")


def _host(parts: SplitResult) -> tuple[str, IPAddress | None]:
    """(host text, address if the host is an IP literal)."""
    raw = parts.hostname
    if not raw:
        raise InvalidUrlError("URL has no host")
    try:
        ascii_host = raw.lower() if raw.isascii() else raw.encode("idna").decode("ascii")
        address = parse_ip_literal(ascii_host)
    except (UnicodeError, ValueError) as exc:
        raise InvalidUrlError(f"invalid host: {exc}") from None
    if address is not None:
        return str(address), address
    if len(ascii_host) > 253 or not _NAME.fullmatch(ascii_host):
        raise InvalidUrlError("invalid host name")
    return ascii_host, None
