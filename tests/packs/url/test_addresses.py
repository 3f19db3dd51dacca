"""Host literals in every form, and the address rule, checked directly."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from dpp.http.outbound.addresses import block_reason, parse_ip_literal


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),  # 127·2^24 + 1
        ("0177.0.0.1", "127.0.0.1"),  # octal 177 = 127
        ("0x7f.1", "127.0.0.1"),  # a.b: 8 + 24 bits
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),  # a.b.c: 8 + 8 + 16 bits
        ("0x7f000001", "127.0.0.1"),
        ("0X7F.0X0.0X0.0X1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),  # octal of 2130706433
        ("127.0.0.1.", "127.0.0.1"),  # a trailing dot
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),  # browsers read "0x" as 0
        ("1.2.65535", "1.2.255.255"),
        ("4294967295", "255.255.255.255"),
        ("::1", "::1"),
        ("fe80::1%25eth0", "fe80::1"),  # zone ids are dropped
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
    ],
)
def test_literals_are_read_like_inet_aton(host: str, expected: str) -> None:
    assert parse_ip_literal(host) == ip_address(expected)


@pytest.mark.parametrize(
    "host", ["example.com", "localhost", "a1.b2", "0x7f.example", "xn--bcher-kva.example", "1.2.0x1g"]
)
def test_names_are_not_literals(host: str) -> None:
    assert parse_ip_literal(host) is None


@pytest.mark.parametrize(
    "host",
    [
        "1.2.3.4.5",  # five parts
        "256.0.0.1",  # a part over 255
        "1.2.3.256",
        "4294967296",  # 2^32
        "08.0.0.1",  # 8 is no octal digit
        "example.123",  # ends in a number, so must be an address, and is not
        "1..2",
        "::zz",
    ],
)
def test_hosts_that_must_be_addresses_but_are_invalid_are_errors(host: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 -- the message varies by form
        parse_ip_literal(host)


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert block_reason(ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("127.0.0.1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # mapped: judged as the IPv4 address it is
        ("10.9.8.7", "private"),
        ("100.64.0.1", "shared address space (CGNAT)"),
        ("198.19.255.255", "benchmarking"),
        ("203.0.113.9", "documentation"),
        ("255.255.255.255", "broadcast"),
        ("239.1.1.1", "multicast"),
        ("::", "unspecified"),
        ("::127.0.0.1", "IPv4-compatible (deprecated)"),
        ("2002:a00:1::", "embeds 10.0.0.1, private"),  # 6to4
        ("64:ff9b::a9fe:a9fe", "embeds 169.254.169.254, cloud metadata"),  # NAT64
        ("64:ff9b:1::1", "local-use NAT64"),
        ("2001::1", "IETF protocol assignments"),  # Teredo
        ("fec0::1", "site-local (deprecated)"),
        ("ff0e::1", "multicast"),
    ],
)
def test_blocked_addresses_say_why(address: str, reason: str) -> None:
    assert block_reason(ip_address(address)) == reason


def test_extra_allowed_networks_open_exactly_what_they_name() -> None:
    extra = (ip_network("127.0.0.1/32"),)

    assert block_reason(ip_address("127.0.0.1"), extra) is None
    assert block_reason(ip_address("::ffff:127.0.0.1"), extra) is None  # the same destination
    assert block_reason(ip_address("127.0.0.2"), extra) == "loopback"
    assert block_reason(ip_address("::1"), extra) == "loopback"
