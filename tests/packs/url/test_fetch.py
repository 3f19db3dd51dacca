"""The url pack against local HTTP and HTTPS servers: results, costs, caps, redirects, DNS, time."""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from packs.base import PackError, PackInterrupted, UrlPolicy
from packs.url import UrlPack
from packs.url.client import FetchError
from tests.helpers.packs import LOOPBACK_ONE, make_context
from tests.packs.url.servers import (
    Canaries,
    FakeResolver,
    Server,
    raw_response,
    redirect,
    respond,
    stall,
    trickle_body,
    trickle_headers,
)

PAGE = (
    b"<!doctype html><html><head><title>  Quarterly\n report </title>"
    b"<style>p { color: red }</style><script>var secret = 1;</script></head>"
    b"<body><h1>Results</h1><p>Revenue &amp; costs</p><p>went <b>up</b>.</p></body></html>"
)
BODY_50K = bytes(range(256)) * 195 + b"x" * 80  # 50,000 bytes, not all equal


def http_policy(resolver: FakeResolver | None = None, **overrides: object) -> UrlPolicy:
    settings: dict[str, object] = {
        "allow_http": True,
        "extra_allowed_networks": LOOPBACK_ONE,
        "resolver": resolver or FakeResolver({"site.test": ["127.0.0.1"]}),
    }
    settings.update(overrides)
    return UrlPolicy(**settings)  # type: ignore[arg-type]


def run(url: str, policy: UrlPolicy, **context: object) -> dict[str, object]:
    result = UrlPack().execute({"url": url}, make_context(policy=policy, **context))  # type: ignore[arg-type]
    return {**result.data, "cost_micros": result.cost_micros}


def fetch_error(url: str, policy: UrlPolicy, inputs: dict[str, object] | None = None, **context: object) -> PackError:
    with pytest.raises(PackError) as raised:
        UrlPack().execute({"url": url, **(inputs or {})}, make_context(policy=policy, **context))  # type: ignore[arg-type]
    return raised.value


# --- success ----------------------------------------------------------------------------------------


def test_http_page_by_name_reports_everything(servers: Callable[..., Server]) -> None:
    origin = servers(routes={"/page?q=1": respond(200, PAGE, content_type="text/html; charset=utf-8")})
    resolver = FakeResolver({"site.test": ["127.0.0.1"]})

    data = run(f"http://site.test:{origin.port}/page?q=1#section", http_policy(resolver))

    assert data == {
        "final_url": f"http://site.test:{origin.port}/page?q=1",  # the fragment never leaves the client
        "status": 200,
        "content_type": "text/html; charset=utf-8",
        "bytes": len(PAGE),
        "sha256": hashlib.sha256(PAGE).hexdigest(),
        "title": "Quarterly report",
        "text": "Results Revenue & costs went up.",
        "redirect_chain": [],
        "truncated": False,
        "cost_micros": 2_100,  # 2_000 + 100 × ceil(216 / 10_240) = 2_000 + 100 × 1
    }
    assert len(PAGE) == 216
    # the original Host header went to the checked address; one lookup for one hop
    assert [(seen.path, seen.host) for seen in origin.seen] == [("/page?q=1", f"site.test:{origin.port}")]
    assert resolver.calls == [("site.test", origin.port)]


def test_any_http_status_is_a_successful_fetch(servers: Callable[..., Server]) -> None:
    origin = servers(default=respond(404, b"no such page"))

    data = run(origin.url("/missing"), http_policy())

    assert (data["status"], data["text"], data["bytes"], data["cost_micros"]) == (404, "no such page", 12, 2_100)


def test_an_empty_body_costs_the_base_price(servers: Callable[..., Server]) -> None:
    origin = servers(default=respond(204, b"", content_type=None))

    data = run(origin.url(), http_policy())

    assert (data["status"], data["bytes"], data["text"], data["cost_micros"]) == (204, 0, "", 2_000)


@pytest.fixture
def tls_ca(tmp_path: Path) -> tuple[trustme.CA, str]:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ca, str(ca_file)


@dataclass
class HttpsOrigin:
    """An HTTPS server, the SNI names it got, and the file of the CA that issued its certificate."""

    server: Server
    sni: list[str | None]
    ca_file: str

    def policy(self, names: dict[str, list[str] | list[list[str]]] | None = None, **more: Any) -> UrlPolicy:
        """The loopback allowed, the test CA trusted, and `names` resolved by a fake resolver (none: the real one)."""
        resolver = None if names is None else FakeResolver(names)
        return UrlPolicy(extra_allowed_networks=LOOPBACK_ONE, resolver=resolver, ca_file=self.ca_file, **more)


@pytest.fixture
def https_origin(servers: Callable[..., Server], tls_ca: tuple[trustme.CA, str]) -> HttpsOrigin:
    """An HTTPS server whose certificate names secure.test and 127.0.0.1; records the SNI it gets."""
    ca, ca_file = tls_ca
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("secure.test", "127.0.0.1").configure_cert(server_tls)
    sni: list[str | None] = []
    server_tls.sni_callback = lambda sock, name, context: sni.append(name)
    return HttpsOrigin(servers(default=respond(200, b"over tls"), tls=server_tls), sni, ca_file)


def test_https_by_name_verifies_the_certificate_for_the_name(https_origin: HttpsOrigin) -> None:
    origin, sni = https_origin.server, https_origin.sni
    policy = https_origin.policy({"secure.test": ["127.0.0.1"]})

    data = run(f"https://secure.test:{origin.port}/doc", policy)

    assert (data["status"], data["text"], data["final_url"]) == (
        200,
        "over tls",
        f"https://secure.test:{origin.port}/doc",
    )
    assert sni == ["secure.test"]
    assert [(seen.path, seen.host) for seen in origin.seen] == [("/doc", f"secure.test:{origin.port}")]


def test_https_to_an_ip_literal_checks_the_ip_in_the_certificate(https_origin: HttpsOrigin) -> None:
    data = run(f"https://127.0.0.1:{https_origin.server.port}/", https_origin.policy())

    assert data["status"] == 200
    assert https_origin.sni == [None]  # no SNI for an address


def test_https_certificate_for_another_name_fails(https_origin: HttpsOrigin) -> None:
    origin = https_origin.server
    policy = https_origin.policy({"other.test": ["127.0.0.1"]})

    error = fetch_error(f"https://other.test:{origin.port}/", policy)

    assert error.reason_code == "FETCH_FAILED"
    assert "certificate" in error.detail.lower()
    assert origin.seen == []


def test_https_without_the_test_ca_is_not_trusted(https_origin: HttpsOrigin) -> None:
    origin = https_origin.server
    policy = UrlPolicy(extra_allowed_networks=LOOPBACK_ONE, resolver=FakeResolver({"secure.test": ["127.0.0.1"]}))

    error = fetch_error(f"https://secure.test:{origin.port}/", policy)

    assert error.reason_code == "FETCH_FAILED"
    assert "CERTIFICATE_VERIFY_FAILED" in error.detail
    assert origin.seen == []


# --- byte caps and cost -------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_max_bytes_caps_the_read_and_the_cost(servers: Callable[..., Server], chunked: bool) -> None:
    origin = servers(default=respond(200, BODY_50K, content_type="application/octet-stream", chunked=chunked))

    result = UrlPack().execute({"url": origin.url(), "max_bytes": 20_000}, make_context(policy=http_policy()))

    assert result.data["bytes"] == 20_000
    assert result.data["truncated"] is True
    assert result.data["sha256"] == hashlib.sha256(BODY_50K[:20_000]).hexdigest()
    assert result.data["text"] is None  # binary
    assert result.cost_micros == 2_200  # 2_000 + 100 × ceil(20_000 / 10_240) = 2_000 + 100 × 2


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_of_exactly_max_bytes_is_not_truncated(servers: Callable[..., Server], chunked: bool) -> None:
    origin = servers(default=respond(200, BODY_50K[:20_000], chunked=chunked))

    result = UrlPack().execute({"url": origin.url(), "max_bytes": 20_000}, make_context(policy=http_policy()))

    assert (result.data["bytes"], result.data["truncated"], result.cost_micros) == (20_000, False, 2_200)


@pytest.mark.parametrize(
    ("max_cost_micros", "expected_bytes", "expected_cost"),
    [
        (2_100, 10_240, 2_100),  # (2_100 − 2_000) // 100 = 1 block of 10_240 bytes
        (2_399, 30_720, 2_300),  # (2_399 − 2_000) // 100 = 3 blocks; the odd 99 micros buy nothing
        (2_500, 50_000, 2_500),  # 5 blocks = 51_200 bytes ≥ the 50_000 there are
    ],
)
def test_the_reservation_caps_the_bytes_so_the_cost_never_exceeds_it(
    servers: Callable[..., Server], max_cost_micros: int, expected_bytes: int, expected_cost: int
) -> None:
    origin = servers(default=respond(200, BODY_50K, chunked=True))

    data = run(origin.url(), http_policy(), max_cost_micros=max_cost_micros)

    assert (data["bytes"], data["cost_micros"]) == (expected_bytes, expected_cost)
    assert data["truncated"] is (expected_bytes < len(BODY_50K))
    assert data["sha256"] == hashlib.sha256(BODY_50K[:expected_bytes]).hexdigest()
    assert expected_cost <= max_cost_micros


def test_a_reservation_below_the_floor_fetches_nothing(servers: Callable[..., Server]) -> None:
    origin = servers()

    error = fetch_error(origin.url(), http_policy(), max_cost_micros=2_099)

    assert (error.reason_code, origin.seen) == ("PACK_FAILED", [])


# --- redirects -----------------------------------------------------------------------------------------


def test_redirects_are_followed_checked_and_reported(servers: Callable[..., Server]) -> None:
    origin = servers(
        routes={
            "/a": redirect("/b", 301),  # relative
            "/b": redirect("c?x=1", 302),  # relative to /b
            "/c?x=1": redirect("PLACEHOLDER", 307),
            "/d": respond(200, b"landed"),
        }
    )
    origin.routes["/c?x=1"] = redirect(f"http://site.test:{origin.port}/d", 307)  # absolute
    resolver = FakeResolver({"site.test": ["127.0.0.1"]})
    base = f"http://site.test:{origin.port}"

    data = run(f"{base}/a", http_policy(resolver))

    assert data["redirect_chain"] == [
        {"url": f"{base}/a", "status": 301},
        {"url": f"{base}/b", "status": 302},
        {"url": f"{base}/c?x=1", "status": 307},
    ]
    assert (data["final_url"], data["status"], data["text"]) == (f"{base}/d", 200, "landed")
    assert resolver.hosts() == ["site.test"] * 4  # resolved once per hop, never more
    assert origin.paths == ["/a", "/b", "/c?x=1", "/d"]


def _redirect_ladder(servers: Callable[..., Server], hops: int) -> Server:
    origin = servers(routes={f"/r{i}": redirect(f"/r{i + 1}") for i in range(hops)})
    origin.routes[f"/r{hops}"] = respond(200, b"top")
    return origin


def test_five_redirects_are_allowed(servers: Callable[..., Server]) -> None:
    origin = _redirect_ladder(servers, 5)

    data = run(origin.url("/r0"), http_policy())

    assert (data["text"], len(data["redirect_chain"])) == ("top", 5)  # type: ignore[arg-type]


def test_a_sixth_redirect_fails(servers: Callable[..., Server]) -> None:
    origin = _redirect_ladder(servers, 6)

    error = fetch_error(origin.url("/r0"), http_policy())

    assert error.reason_code == "FETCH_FAILED"
    assert "more than 5 redirects" in error.detail
    assert origin.paths == [f"/r{i}" for i in range(6)]  # /r6 is never requested


def test_redirect_from_https_to_http_is_refused_unless_http_is_allowed(
    servers: Callable[..., Server], https_origin: HttpsOrigin
) -> None:
    plain = servers(default=respond(200, b"plain"))
    origin = https_origin.server
    origin.default = redirect(plain.url("/downgraded"))
    names: dict[str, list[str] | list[list[str]]] = {"secure.test": ["127.0.0.1"]}
    url = f"https://secure.test:{origin.port}/"

    error = fetch_error(url, https_origin.policy(names))
    assert error.reason_code == "FETCH_FAILED"
    assert "http is not allowed" in error.detail
    assert isinstance(error, FetchError)
    assert error.redirect_chain == [{"url": url, "status": 302}]
    assert plain.seen == []

    allowed = https_origin.policy(names, allow_http=True)
    assert run(url, allowed)["text"] == "plain"
    assert plain.paths == ["/downgraded"]


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("ftp://site.test/file", "scheme 'ftp' is not allowed"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("http://user:pw@site.test/", "credentials"),
    ],
)
def test_redirect_to_a_refused_url_fails(servers: Callable[..., Server], location: str, expected: str) -> None:
    origin = servers(default=redirect(location))

    error = fetch_error(origin.url("/go"), http_policy())

    assert error.reason_code == "FETCH_FAILED"
    assert expected in error.detail
    assert origin.paths == ["/go"]


def test_redirect_to_a_blocked_literal_stops_before_it(
    servers: Callable[..., Server], canaries: Canaries, router: list[tuple[str, int]]
) -> None:
    origin = servers(routes={"/start": redirect(f"http://0x7f.2:{canaries.port}/secret")})

    error = fetch_error(origin.url("/start"), http_policy())

    assert error.reason_code == "URL_BLOCKED"
    assert isinstance(error, FetchError)
    assert error.redirect_chain == [{"url": origin.url("/start"), "status": 302}]
    assert f"0x7f.2:{canaries.port}/secret" in error.detail
    assert origin.url("/start") in error.detail
    assert canaries.requests == 0
    assert router == [("127.0.0.1", origin.port)]  # the one allowed hop, nothing else


def test_redirect_to_a_name_that_resolves_to_a_blocked_address(
    servers: Callable[..., Server], canaries: Canaries, router: list[tuple[str, int]]
) -> None:
    origin = servers(routes={"/start": redirect(f"http://metadata.test:{canaries.port}/latest/meta-data")})
    resolver = FakeResolver({"site.test": ["127.0.0.1"], "metadata.test": ["169.254.169.254"]})

    error = fetch_error(f"http://site.test:{origin.port}/start", http_policy(resolver))

    assert error.reason_code == "URL_BLOCKED"
    assert "169.254.169.254" in error.detail
    assert resolver.hosts() == ["site.test", "metadata.test"]
    assert canaries.requests == 0
    assert router == [("127.0.0.1", origin.port)]


# --- DNS ------------------------------------------------------------------------------------------------


@pytest.fixture
def rebinding(servers: Callable[..., Server]) -> tuple[Server, Server]:
    """An origin on 127.0.0.1 and a canary on 127.0.0.2 at the SAME port: only the address differs."""
    for _ in range(20):
        origin = servers("127.0.0.1", default=respond(200, b"origin"))
        try:
            canary = servers("127.0.0.2", origin.port, default=respond(200, b"canary"))
        except OSError:
            continue
        return origin, canary
    raise RuntimeError("no port free on both 127.0.0.1 and 127.0.0.2")


def test_dns_answer_changing_after_the_check_is_never_used(rebinding: tuple[Server, Server]) -> None:
    origin, canary = rebinding
    # First answer: an allowed address; any later lookup: loopback (blocked). A client that checks
    # one answer and connects by name would reach the canary.
    resolver = FakeResolver({"rebind.test": [["127.0.0.1"], ["127.0.0.2"]]})

    data = run(f"http://rebind.test:{origin.port}/", http_policy(resolver))

    assert data["text"] == "origin"
    assert resolver.hosts() == ["rebind.test"]  # exactly one lookup for the one hop
    assert canary.seen == []
    assert [seen.host for seen in origin.seen] == [f"rebind.test:{origin.port}"]


def test_dns_answer_changing_between_hops_is_checked_again(rebinding: tuple[Server, Server]) -> None:
    origin, canary = rebinding
    origin.routes["/hop"] = redirect(f"http://rebind.test:{origin.port}/next")
    resolver = FakeResolver({"rebind.test": [["127.0.0.1"], ["127.0.0.2"]]})

    error = fetch_error(f"http://rebind.test:{origin.port}/hop", http_policy(resolver))

    assert error.reason_code == "URL_BLOCKED"
    assert resolver.hosts() == ["rebind.test", "rebind.test"]  # once per hop
    assert origin.paths == ["/hop"]
    assert canary.seen == []


def test_an_unknown_name_fails_to_fetch() -> None:
    error = fetch_error("http://nowhere.test/", http_policy(FakeResolver({})))

    assert error.reason_code == "FETCH_FAILED"
    assert "could not resolve nowhere.test" in error.detail


def test_a_resolver_answer_that_is_no_address_fails() -> None:
    error = fetch_error("http://odd.test/", http_policy(FakeResolver({"odd.test": ["not-an-ip"]})))

    assert (error.reason_code, "non-address" in error.detail) == ("FETCH_FAILED", True)


def test_a_refused_connection_fails_to_fetch() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    error = fetch_error(f"http://127.0.0.1:{port}/", http_policy())

    assert error.reason_code == "FETCH_FAILED"
    assert "ConnectionRefusedError" in error.detail


def test_a_garbled_response_fails_to_fetch(servers: Callable[..., Server]) -> None:
    origin = servers(default=lambda handler, server: handler.wfile.write(b"SMTP ready\r\n\r\n"))

    error = fetch_error(origin.url(), http_policy())

    assert error.reason_code == "FETCH_FAILED"
    assert "BadStatusLine" in error.detail


# --- time ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "route", [stall, trickle_headers, trickle_body], ids=["stall", "trickle-headers", "trickle-body"]
)
def test_a_slow_server_cannot_outlast_the_timebox(servers: Callable[..., Server], route: Callable[..., None]) -> None:
    origin = servers(default=route)
    started = time.monotonic()

    error = fetch_error(origin.url(), http_policy(), timeout_s=0.5)

    elapsed = time.monotonic() - started
    assert error.reason_code == "TIMEBOX_EXCEEDED"
    assert 0.45 <= elapsed < 1.2


def test_a_slow_resolver_cannot_outlast_the_timebox() -> None:
    resolver = FakeResolver({"slow.test": ["127.0.0.1"]}, delay_s=3)
    started = time.monotonic()

    error = fetch_error("http://slow.test/", http_policy(resolver), timeout_s=0.3)

    assert error.reason_code == "TIMEBOX_EXCEEDED"
    assert time.monotonic() - started < 1.0


def test_a_cancel_stops_a_download_between_chunks(servers: Callable[..., Server]) -> None:
    origin = servers(default=trickle_body)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()

    with pytest.raises(PackInterrupted):
        UrlPack().execute({"url": origin.url()}, make_context(policy=http_policy(), should_stop=stop.is_set))

    assert 0.25 <= time.monotonic() - started < 1.0


def test_the_body_is_read_in_bounded_steps(servers: Callable[..., Server]) -> None:
    # A response with a huge Content-Length that ends early is what was read, no more, no error.
    origin = servers(
        default=lambda handler, server: handler.wfile.write(raw_response(200, [("Content-Length", "999")], b"short"))
    )

    data = run(origin.url(), http_policy())

    assert (data["bytes"], data["text"], data["truncated"]) == (5, "short", False)
