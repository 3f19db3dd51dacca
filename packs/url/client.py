"""The ``url`` pack's HTTP(S) client: check an address, then connect to exactly that address.

Guarantees, for each hop (the first request and each of at most 5 redirects):
- the host is resolved at most once, through ``policy.resolver`` (default ``getaddrinfo``), within
  the deadline; an IP literal is never resolved;
- if ANY address is blocked (``addresses.block_reason``), nothing is connected to: ``URL_BLOCKED``;
- the connection goes to a checked address, never to a fresh lookup; the request carries the original
  ``Host``; https verifies the certificate for the original host (and sends it as SNI when it is a
  name), trusting the system CAs plus ``policy.ca_file``;
- a redirect target is parsed and checked like the first URL (https→http only if http is allowed);
- every socket operation is bounded by the time left, and a watchdog shuts the socket down at the
  deadline, so a server that trickles bytes cannot stretch a blocking call past it;
  ``context.check()`` runs between chunks;
- at most ``cap`` body bytes are kept; one more byte may be peeked (never kept, never billed) to learn
  whether the body was cut, when no Content-Length says so.
Failures: ``FetchError`` (a ``PackError``) with ``FETCH_FAILED`` (network, TLS, protocol, refused or
too many redirects) or ``URL_BLOCKED``; ``TIMEBOX_EXCEEDED`` when the deadline passes during I/O;
``PackInterrupted`` on cancel. ``FetchError.redirect_chain`` lists the hops followed before it.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any
from urllib.parse import urljoin

from packs.base import PackContext, PackError
from packs.url.addresses import IPAddress, block_reason, unmapped
from packs.url.target import InvalidUrlError, Target, parse_target

MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CHUNK_BYTES = 65_536
_PROBE_TIMEOUT_S = 1.0
_WATCHDOG_SLACK_S = 0.01  # fire just after the deadline, so context.check() agrees it has passed
_HEADERS = {
    "User-Agent": "DPP-url-pack/1.0",
    "Accept": "*/*",
    "Accept-Encoding": "identity",  # the bytes read are the bytes billed: no compression
    "Connection": "close",
}


class FetchError(PackError):
    """A url pack failure that also carries the redirect hops followed before it."""

    def __init__(self, reason_code: str, detail: str, redirect_chain: Sequence[dict[str, Any]] = ()) -> None:
        chain = list(redirect_chain)
        if chain:
            hops = " -> ".join(f"{hop['url']} [{hop['status']}]" for hop in chain)
            detail = f"{detail} (after redirects: {hops})"
        super().__init__(reason_code, detail)
        self.redirect_chain = chain


@dataclass(frozen=True)
class Fetched:
    final_url: str
    status: int
    content_type: str | None
    charset: str | None
    body: bytes
    truncated: bool
    redirect_chain: list[dict[str, Any]]


def fetch(url: str, *, cap: int, context: PackContext) -> Fetched:
    """GET ``url``, following at most 5 checked redirects, keeping at most ``cap`` body bytes."""
    chain: list[dict[str, Any]] = []
    target = _checked_target(url, context, chain)
    while True:
        with _exchange(target, context, chain) as (response, watchdog):
            location = response.getheader("Location") if response.status in _REDIRECT_STATUSES else None
            if location is None:
                with _io_errors(target, context, chain):
                    body, truncated = _read_body(response, watchdog, cap, context)
                return Fetched(
                    final_url=target.url,
                    status=response.status,
                    content_type=response.getheader("Content-Type"),
                    charset=response.headers.get_content_charset(),
                    body=body,
                    truncated=truncated,
                    redirect_chain=chain,
                )
            chain.append({"url": target.url, "status": response.status})
        if len(chain) > MAX_REDIRECTS:
            raise FetchError("FETCH_FAILED", f"more than {MAX_REDIRECTS} redirects", chain)
        target = _checked_target(urljoin(target.url, location), context, chain)


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


def _checked_target(url: str, context: PackContext, chain: list[dict[str, Any]]) -> Target:
    try:
        return parse_target(url, allow_http=context.url_policy.allow_http)
    except InvalidUrlError as exc:
        what = "redirect to" if chain else "URL"
        raise FetchError("FETCH_FAILED", f"{what} {url[:300]!r} refused: {exc}", chain) from None


@contextlib.contextmanager
def _exchange(
    target: Target, context: PackContext, chain: list[dict[str, Any]]
) -> Iterator[tuple[http.client.HTTPResponse, _Watchdog]]:
    """Check, connect, send the GET and yield the response (headers read) with its watchdog."""
    addresses = _destinations(target, context, chain)
    with _io_errors(target, context, chain):
        sock = _connect(addresses, target, context)
    with _Watchdog(sock, context.remaining_s() + _WATCHDOG_SLACK_S) as watchdog:
        with _io_errors(target, context, chain):
            if target.scheme == "https":
                watchdog.sock = sock = _tls_context(context).wrap_socket(sock, server_hostname=target.tls_name)
            connection = _PinnedConnection(target, sock)
            connection.request("GET", target.request_target, headers=_HEADERS)
            response = connection.getresponse()
        try:
            yield response, watchdog
        finally:
            response.close()
            connection.close()


def _destinations(target: Target, context: PackContext, chain: list[dict[str, Any]]) -> list[IPAddress]:
    """The checked addresses to try, in order; URL_BLOCKED if any address of the host is blocked."""
    extra = context.url_policy.extra_allowed_networks
    addresses = [target.address] if target.address is not None else _resolve(target, context, chain)
    for address in addresses:
        reason = block_reason(address, extra)
        if reason is not None:
            where = "" if target.address is not None else f"{target.host} resolves to "
            detail = f"{target.url}: {where}{address}, which is blocked ({reason})"
            raise FetchError("URL_BLOCKED", detail, chain)
    return list(dict.fromkeys(unmapped(address) for address in addresses))


def _resolve(target: Target, context: PackContext, chain: list[dict[str, Any]]) -> list[IPAddress]:
    """One lookup of the host, within the deadline (a stuck resolver is abandoned, not awaited)."""
    resolver = context.url_policy.resolver or _getaddrinfo
    lookup = _Lookup(lambda: resolver(target.host, target.port))
    answer = lookup.wait(context)
    if isinstance(answer, BaseException):
        raise FetchError("FETCH_FAILED", f"could not resolve {target.host}: {answer}", chain)
    try:
        addresses = [ip_address(text.split("%", 1)[0]) for text in answer]
    except ValueError as exc:
        raise FetchError("FETCH_FAILED", f"the resolver answered a non-address: {exc}", chain) from None
    if not addresses:
        raise FetchError("FETCH_FAILED", f"{target.host} has no address", chain)
    return addresses


class _Lookup:
    """Runs a resolver in a daemon thread, so that waiting for it is bounded by the deadline."""

    def __init__(self, call: Callable[[], list[str]]) -> None:
        self._call = call
        self._outcome: list[str] | BaseException = TimeoutError("DNS resolution timed out")
        self._thread = threading.Thread(target=self._run, name="dpp-url-resolve", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._outcome = list(self._call())
        except Exception as exc:  # any resolver failure is a failed fetch, reported as such
            self._outcome = exc

    def wait(self, context: PackContext) -> list[str] | BaseException:
        self._thread.join(_time_left(context))
        if self._thread.is_alive():
            context.check()
        return self._outcome


def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]


def _connect(addresses: list[IPAddress], target: Target, context: PackContext) -> socket.socket:
    """The first checked address that accepts a connection; the last error if none does."""
    error: OSError = OSError(f"no address to connect to for {target.host}")
    for address in addresses:
        try:
            return open_connection(address, target.port, _time_left(context))
        except OSError as exc:
            error = exc
    raise error


def _tls_context(context: PackContext) -> ssl.SSLContext:
    tls = ssl.create_default_context()
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    if context.url_policy.ca_file:
        tls.load_verify_locations(cafile=context.url_policy.ca_file)
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
def _io_errors(target: Target, context: PackContext, chain: list[dict[str, Any]]) -> Iterator[None]:
    """Network, TLS and protocol errors -> FETCH_FAILED, unless the run must stop anyway."""
    try:
        yield
    except (OSError, http.client.HTTPException) as exc:
        context.check()  # at the deadline the error is the timebox's doing: TIMEBOX_EXCEEDED
        detail = f"{target.url}: {type(exc).__name__}: {exc}"
        raise FetchError("FETCH_FAILED", detail[:500], chain) from None


def _read_body(
    response: http.client.HTTPResponse, watchdog: _Watchdog, cap: int, context: PackContext
) -> tuple[bytes, bool]:
    """At most ``cap`` bytes of the body, and whether the body went on past them."""
    body = bytearray()
    while len(body) < cap:
        watchdog.sock.settimeout(_time_left(context))
        chunk = response.read1(min(_CHUNK_BYTES, cap - len(body)))
        if not chunk:
            break
        body += chunk
    context.check()  # the watchdog's shutdown reads as an end of body: it is not one
    return bytes(body), len(body) >= cap and _more_after(response, watchdog, context)


def _more_after(response: http.client.HTTPResponse, watchdog: _Watchdog, context: PackContext) -> bool:
    """Whether the body goes on past what was read: Content-Length tells, else peek one byte."""
    if response.length is not None:
        return response.length > 0
    watchdog.sock.settimeout(min(_PROBE_TIMEOUT_S, _time_left(context)))
    try:
        return bool(response.read1(1))
    except TimeoutError:
        return True  # its end did not come: call it cut


def _time_left(context: PackContext) -> float:
    """The timeout for the next blocking call: what is left of the timebox (raises once it is gone)."""
    context.check()
    return max(context.remaining_s(), 0.001)
