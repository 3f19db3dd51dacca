"""SSRF: every blocked destination fails with URL_BLOCKED before a single connection is opened.

Each row would reach a live canary if the check were missing: loopback rows hit the canaries on
127.0.0.2 / [::1] for real, other rows go through the ``router`` (see conftest). The control test
below proves it row by row, by switching the address check off.
"""

from __future__ import annotations

import pytest

from dpp.http.outbound import client as url_client
from packs.base import PackError, UrlPolicy
from packs.url import UrlPack, pack
from tests.helpers.packs import LOOPBACK_ONE, make_context
from tests.packs.url.servers import CANARY_BODY, Canaries, FakeResolver

# Host literals (as written in the URL) that must be refused, without any DNS.
LITERALS = [
    ("dotted loopback", "127.0.0.2"),
    ("decimal", "2130706434"),
    ("octal", "0177.0.0.2"),
    ("hex dotted", "0x7f.0x0.0x0.0x2"),
    ("hex whole", "0x7F000002"),
    ("octal whole", "017700000002"),
    ("short a.b", "127.2"),
    ("short a.b.c", "127.0.2"),
    ("mixed bases", "0x7f.0.00.02"),
    ("trailing dot", "127.0.0.2."),
    ("v4-mapped v6", "[::ffff:127.0.0.2]"),
    ("v4-mapped v6 hex", "[::FFFF:7f00:2]"),
    ("v6 loopback", "[::1]"),
    ("v6 loopback long", "[0:0:0:0:0:0:0:1]"),
    ("unspecified", "0.0.0.0"),
    ("unspecified decimal", "0"),
    ("private 10/8", "10.0.0.1"),
    ("private 172.16/12", "172.16.0.1"),
    ("private 192.168/16", "192.168.1.1"),
    ("metadata", "169.254.169.254"),
    ("metadata decimal", "2852039166"),
    ("CGNAT", "100.64.0.1"),
    ("alibaba metadata", "100.100.100.200"),
    ("oracle metadata", "192.0.0.192"),
    ("multicast", "224.0.0.1"),
    ("broadcast", "255.255.255.255"),
    ("reserved", "240.0.0.1"),
    ("benchmarking", "198.18.0.1"),
    ("documentation", "192.0.2.1"),
    ("v6 unspecified", "[::]"),
    ("v6 link-local with zone", "[fe80::1%25lo]"),
    ("v6 unique local", "[fc00::1]"),
    ("ec2 metadata v6", "[fd00:ec2::254]"),
    ("6to4 of loopback", "[2002:7f00:2::]"),
    ("NAT64 of metadata", "[64:ff9b::a9fe:a9fe]"),
    ("v4-compatible", "[::127.0.0.2]"),
    ("v6 multicast", "[ff02::1]"),
    ("v6 documentation", "[2001:db8::1]"),
    ("v4-mapped metadata", "[::ffff:a9fe:a9fe]"),
]

# Names the (fake) DNS maps to blocked addresses: refused after the single lookup.
NAMES = [
    ("name to loopback", "loop.test", ["127.0.0.2"]),
    ("name to allowed AND blocked", "mixed.test", ["127.0.0.1", "127.0.0.2"]),
    ("name to v6 loopback", "v6loop.test", ["::1"]),
    ("name to v4-mapped", "mapped.test", ["::ffff:127.0.0.2"]),
    ("name to metadata", "metadata.test", ["169.254.169.254"]),
    ("name to private", "internal.test", ["10.1.2.3"]),
    ("name to CGNAT", "cgnat.test", ["100.64.1.1"]),
    ("name to unique local", "ula.test", ["fd12:3456::1"]),
    ("name to link-local with scope", "linklocal6.test", ["fe80::1%lo"]),
    ("name to NAT64 of loopback", "nat64.test", ["64:ff9b::7f00:2"]),
    ("localhost", "localhost", ["::1", "127.0.0.2"]),
]

ROWS = [pytest.param(host, None, id=label) for label, host in LITERALS] + [
    pytest.param(host, answer, id=label) for label, host, answer in NAMES
]


def _policy(host: str, answer: list[str] | None) -> tuple[UrlPolicy, FakeResolver]:
    resolver = FakeResolver({host: answer} if answer is not None else {})
    policy = UrlPolicy(allow_http=True, extra_allowed_networks=LOOPBACK_ONE, resolver=resolver)
    return policy, resolver


def test_the_table_is_large_enough() -> None:
    assert len(ROWS) >= 30


@pytest.mark.parametrize(("host", "answer"), ROWS)
def test_blocked_destination_is_refused_before_any_connection(
    host: str, answer: list[str] | None, canaries: Canaries, router: list[tuple[str, int]]
) -> None:
    policy, resolver = _policy(host, answer)
    url = f"http://{host}:{canaries.port}/secret"

    with pytest.raises(PackError) as raised:
        UrlPack().execute({"url": url}, make_context(policy=policy))

    assert raised.value.reason_code == "URL_BLOCKED"
    assert canaries.requests == 0
    assert router == []  # not even a TCP connection was attempted
    assert resolver.hosts() == ([] if answer is None else [host])  # literals never go to DNS


@pytest.mark.parametrize(("host", "answer"), ROWS)
def test_validate_refuses_literals_and_never_resolves_names(host: str, answer: list[str] | None) -> None:
    policy, resolver = _policy(host, answer)

    errors = UrlPack().validate({"url": f"http://{host}:8080/secret"}, policy=policy)

    if answer is None:
        assert [error.field for error in errors] == ["inputs.url"]
        assert "blocked address" in errors[0].message
    else:
        assert errors == []
    assert resolver.calls == []


@pytest.mark.parametrize(("host", "answer"), ROWS)
def test_control_without_the_check_every_row_would_reach_a_canary(
    host: str,
    answer: list[str] | None,
    canaries: Canaries,
    router: list[tuple[str, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The mutation the table guards against: an address check that lets everything through.
    monkeypatch.setattr(url_client, "block_reason", lambda *args: None)
    monkeypatch.setattr(pack, "block_reason", lambda *args: None)
    policy, _ = _policy(host, answer)

    result = UrlPack().execute({"url": f"http://{host}:{canaries.port}/secret"}, make_context(policy=policy))

    assert result.data["status"] == 200
    assert result.data["text"] == CANARY_BODY.decode()
    assert canaries.requests == 1
