"""The SSRF-safe outbound HTTP(S) client: check an address, then connect to exactly that address.

Shared by the ``url`` pack (GET, redirects followed) and the webhooks (POST, no redirects). Guarantees, for each
hop (the first request and each redirect followed):
- the host is resolved at most once, through ``policy.resolver`` (default ``getaddrinfo``), within the deadline;
  an IP literal is never resolved;
- if ANY address is blocked (``addresses.block_reason``), nothing is connected to: ``URL_BLOCKED``;
- the connection goes to a checked address, never to a fresh lookup; the request carries the original ``Host``;
  https verifies the certificate for the original host (and sends it as SNI when it is a name), trusting the
  system CAs plus ``policy.ca_file``;
- a redirect target is parsed and checked like the first URL (https→http only if http is allowed);
- every socket operation is bounded by the time left, and a watchdog shuts the socket down at the deadline, so a
  server that trickles bytes cannot stretch a blocking call past it; ``budget.check()`` runs between chunks;
- at most ``cap`` body bytes are kept; one more byte may be peeked (never kept) to learn whether the body was
  cut, when no Content-Length says so.
Failures: ``OutboundError`` with ``FETCH_FAILED`` (network, TLS, protocol, refused or too many redirects) or
``URL_BLOCKED``; whatever ``budget.check()`` raises (the caller's deadline or cancel). ``OutboundError.
redirect_chain`` lists the hops followed before it.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any, Protocol
from urllib.parse import urljoin

from dpp.http.outbound.addresses import IPAddress, IPNetwork, block_reason, unmapped
from dpp.http.outbound.target import InvalidUrlError, Target, parse_target

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CHUNK_BYTES = 65_536
_PROBE_TIMEOUT_S = 1.0
_WATCHDOG_SLACK_S = 0.01  # fire just after the deadline, so budget.check() agrees it has passed


@dataclass(frozen=True)
class OutboundPolicy:
    """Where outbound requests may go. The defaults are production's; the rest exists for tests."""

    allow_http: bool = False
    extra_allowed_networks: tuple[IPNetwork, ...] = ()
    # host, port -> IP address strings; None means socket.getaddrinfo.
    resolver: Callable[[str, int], list[str]] | None = None
    # An extra CA bundle trusted on top of the system's (tests: a local CA).
    ca_file: str | None = None


class Budget(Protocol):
    """The caller's deadline: ``check()`` raises once it has passed (or the caller must stop for another reason)."""

    def check(self) -> None: ...

    def remaining_s(self) -> float: ...


class OutboundError(Exception):
    """A refused or failed request: ``reason_code`` ``URL_BLOCKED`` or ``FETCH_FAILED``, and the hops before it."""

    def __init__(self, reason_code: str, detail: str, redirect_chain: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(f"{reason_code}: {detail}")
        self.reason_code = reason_code
        self.detail = detail
        self.redirect_chain = list(redirect_chain)


@dataclass(frozen=True)
class Response:
    final_url: str
    status: int
    content_type: str | None
    charset: str | None
    body: bytes
    truncated: bool
    redirect_chain: list[dict[str, Any]]


@dataclass(frozen=True)
class Outgoing:
    """One request to send: the method, its headers and body, how many redirects to follow, the body cap."""

    method: str
    headers: Mapping[str, str]
    cap: int
    body: bytes | None = None
    max_redirects: int = 0


def request(url: str, outgoing: Outgoing, *, policy: OutboundPolicy, budget: Budget) -> Response:
    """Send ``outgoing`` to ``url``, following at most ``outgoing.max_redirects`` checked redirects (a redirect
    without redirects allowed is a response like any other), keeping at most ``outgoing.cap`` body bytes."""
    chain: list[dict[str, Any]] = []
    target = _checked_target(url, policy, chain)
    while True:
        with _exchange(target, outgoing, policy, budget, chain) as (response, watchdog):
            location = response.getheader("Location") if response.status in _REDIRECT_STATUSES else None
            if location is None or not outgoing.max_redirects:
                with _io_errors(target, budget, chain):
                    body, truncated = _read_body(response, watchdog, outgoing.cap, budget)
                return Response(
                    final_url=target.url,
                    status=response.status,
                    content_type=response.getheader("Content-Type"),
                    charset=response.headers.get_content_charset(),
                    body=body,
                    truncated=truncated,
                    redirect_chain=chain,
                )
            chain.append({"url": target.url, "status": response.status})
        if len(chain) > outgoing.max_redirects:
            raise OutboundError("FETCH_FAILED", f"more than {outgoing.max_redirects} redirects", chain)
        target = _checked_target(urljoin(target.url, location), policy, chain)


def destinations_check(url: str, *, policy: OutboundPolicy, budget: Budget) -> list[IPAddress]:
    """What a request to ``url`` would connect to, checked (the URL parsed, the host resolved once, EVERY address
    checked), without connecting: OutboundError otherwise. For a check at registration."""
    return _destinations(_checked_target(url, policy, []), policy, budget, [])


def open_connection(address: IPAddress, port: int, timeout: float) -> socket.socket:
    """A TCP connection to exactly ``address`` (no name lookup). Tests may re-route it."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((str(address), port))
    except BaseException:
        sock.close()
        raise
    return sock


def _checked_target(url: str, policy: OutboundPolicy, chain: list[dict[str, Any]]) -> Target:
    try:
        return parse_target(url, allow_http=policy.allow_http)
    except InvalidUrlError as exc:
        what = "redirect to" if chain else "URL"
        raise OutboundError("FETCH_FAILED", f"{what} {url[:300]!r} refused: {exc}", chain) from None


@contextlib.contextmanager
def _exchange(
    target: Target, outgoing: Outgoing, policy: OutboundPolicy, budget: Budget, chain: list[dict[str, Any]]
) -> Iterator[tuple[http.client.HTTPResponse, _Watchdog]]:
    """Check, connect, send the request and yield the response (headers read) with its watchdog."""
    addresses = _destinations(target, policy, budget, chain)
    with _io_errors(target, budget, chain):
        sock = _connect(addresses, target, budget)
    with _Watchdog(sock, budget.remaining_s() + _WATCHDOG_SLACK_S) as watchdog:
        with _io_errors(target, budget, chain):
            if target.scheme == "https":
                watchdog.sock = sock = _tls_context(policy).wrap_socket(sock, server_hostname=target.tls_name)
            connection = _PinnedConnection(target, sock)
            connection.request(
                outgoing.method, target.request_target, body=outgoing.body, headers=dict(outgoing.headers)
            )
            response = connection.getresponse()
        try:
            yield response, watchdog
        finally:
            response.close()
            connection.close()


def _destinations(
    target: Target, policy: OutboundPolicy, budget: Budget, chain: list[dict[str, Any]]
) -> list[IPAddress]:
    """The checked addresses to try, in order; URL_BLOCKED if any address of the host is blocked."""
    extra = policy.extra_allowed_networks
    addresses = [target.address] if target.address is not None else _resolve(target, policy, budget, chain)
    for address in addresses:
        reason = block_reason(address, extra)
        if reason is not None:
            where = "" if target.address is not None else f"{target.host} resolves to "
            detail = f"{target.url}: {where}{address}, which is blocked ({reason})"
            raise OutboundError("URL_BLOCKED", detail, chain)
    return list(dict.fromkeys(unmapped(address) for address in addresses))


def _resolve(target: Target, policy: OutboundPolicy, budget: Budget, chain: list[dict[str, Any]]) -> list[IPAddress]:
    """One lookup of the host, within the deadline (a stuck resolver is abandoned, not awaited)."""
    resolver = policy.resolver or _getaddrinfo
    lookup = _Lookup(lambda: resolver(target.host, target.port))
    answer = lookup.wait(budget)
    if isinstance(answer, BaseException):
        raise OutboundError("FETCH_FAILED", f"could not resolve {target.host}: {answer}", chain)
    try:
        addresses = [ip_address(text.split("%", 1)[0]) for text in answer]
    except ValueError as exc:
        raise OutboundError("FETCH_FAILED", f"the resolver answered a non-address: {exc}", chain) from None
    if not addresses:
        raise OutboundError("FETCH_FAILED", f"{target.host} has no address", chain)
    return addresses


class _Lookup:
    """Runs a resolver in a daemon thread, so that waiting for it is bounded by the deadline."""

    def __init__(self, call: Callable[[], list[str]]) -> None:
        self._call = call
        self._outcome: list[str] | BaseException = TimeoutError("DNS resolution timed out")
        self._thread = threading.Thread(target=self._run, name="dpp-outbound-resolve", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._outcome = list(self._call())
        except Exception as exc:  # any resolver failure is a failed request, reported as such
            self._outcome = exc

    def wait(self, budget: Budget) -> list[str] | BaseException:
        self._thread.join(_time_left(budget))
        if self._thread.is_alive():
            budget.check()
        return self._outcome


def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]


def _connect(addresses: list[IPAddress], target: Target, budget: Budget) -> socket.socket:
    """The first checked address that accepts a connection; the last error if none does."""
    error: OSError = OSError(f"no address to connect to for {target.host}")
    for address in addresses:
        try:
            return open_connection(address, target.port, _time_left(budget))
        except OSError as exc:
            error = exc
    raise error


def _tls_context(policy: OutboundPolicy) -> ssl.SSLContext:
    tls = ssl.create_default_context()
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    if policy.ca_file:
        tls.load_verify_locations(cafile=policy.ca_file)
    return tls


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTPConnection over a socket already connected to a checked address: it never resolves."""

    def __init__(self, target: Target, sock: socket.socket) -> None:
        super().__init__(target.host, target.port)  # host and port make the Host header
        self.default_port = _DEFAULT_PORTS[target.scheme]
        self._pinned = sock

    def connect(self) -> None:
        self.sock = self._pinned


class _Watchdog:
    """Shuts ``sock`` down at the deadline: a blocked read, write or handshake then returns at once."""

    def __init__(self, sock: socket.socket, delay_s: float) -> None:
        self.sock = sock
        self._timer = threading.Timer(delay_s, self._fire)
        self._timer.daemon = True
        # Held while firing and while closing: a shutdown never reaches a descriptor already reused.
        self._lock = threading.Lock()

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        with self._lock:
            self.sock.close()

    def _fire(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def _io_errors(target: Target, budget: Budget, chain: list[dict[str, Any]]) -> Iterator[None]:
    """Network, TLS and protocol errors -> FETCH_FAILED, unless the caller must stop anyway."""
    try:
        yield
    except (OSError, http.client.HTTPException) as exc:
        budget.check()  # at the deadline the error is the deadline's doing: the caller's own error
        detail = f"{target.url}: {type(exc).__name__}: {exc}"
        raise OutboundError("FETCH_FAILED", detail[:500], chain) from None


def _read_body(response: http.client.HTTPResponse, watchdog: _Watchdog, cap: int, budget: Budget) -> tuple[bytes, bool]:
    """At most ``cap`` bytes of the body, and whether the body went on past them."""
    body = bytearray()
    while len(body) < cap:
        watchdog.sock.settimeout(_time_left(budget))
        chunk = response.read1(min(_CHUNK_BYTES, cap - len(body)))
        if not chunk:
            break
        body += chunk
    budget.check()  # the watchdog's shutdown reads as an end of body: it is not one
    return bytes(body), len(body) >= cap and _more_after(response, watchdog, budget)


def _more_after(response: http.client.HTTPResponse, watchdog: _Watchdog, budget: Budget) -> bool:
    """Whether the body goes on past what was read: Content-Length tells, else peek one byte."""
    if response.length is not None:
        return response.length > 0
    watchdog.sock.settimeout(min(_PROBE_TIMEOUT_S, _time_left(budget)))
    try:
        return bool(response.read1(1))
    except TimeoutError:
        return True  # its end did not come: call it cut


def _time_left(budget: Budget) -> float:
    """The timeout for the next blocking call: what is left of the deadline (raises once it is gone)."""
    budget.check()
    return max(budget.remaining_s(), 0.001)
