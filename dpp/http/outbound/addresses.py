"""Which IP addresses outbound requests (the ``url`` pack, webhooks) may connect to, and IP host literals in every form.

The rule (SPEC §5): an address is allowed iff it lies inside ``OutboundPolicy.extra_allowed_networks``
(tests only), or all of these hold:
- it is not in the explicit blocklist below: private, loopback, link-local, CGNAT (100.64/10),
  multicast, reserved, unspecified, benchmarking, documentation, broadcast, IETF special ranges,
  unique-local, site-local, discard-only, and the cloud metadata endpoints (169.254.169.254,
  169.254.170.2, fd00:ec2::254, 100.100.100.200, 192.0.0.192), all inside those ranges anyway;
  the list is explicit because ``ipaddress`` answers differ between Python patch releases;
- ``ipaddress`` calls it globally reachable (``is_global``) and not multicast;
- an IPv4 address embedded in it (6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``) is allowed too.
IPv4-mapped IPv6 (``::ffff:a.b.c.d``) *is* the IPv4 address: it is unwrapped first and connected to
as IPv4. IPv4-compatible (``::a.b.c.d``, deprecated since 2006) and IPv4-translated
(``::ffff:0:a.b.c.d``) addresses are blocked outright, whatever they embed.

Host literals are read the way ``inet_aton`` and browsers (WHATWG) read them: 1 to 4 dot-separated
parts, each decimal, octal (leading 0) or hex (0x), so ``2130706433``, ``0177.0.0.1``, ``0x7f.1`` and
``127.1`` are all 127.0.0.1. A host whose last label is a number but which is no valid address is an
error, never a name to resolve (a resolver might read it as an address).
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

_METADATA = frozenset(
    {
        IPv4Address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
        IPv4Address("169.254.170.2"),  # AWS ECS task metadata
        IPv4Address("100.100.100.200"),  # Alibaba Cloud
        IPv4Address("192.0.0.192"),  # Oracle Cloud
        IPv6Address("fd00:ec2::254"),  # AWS over IPv6
    }
)

_BLOCKED: tuple[tuple[IPv4Network | IPv6Network, str], ...] = tuple(
    (ip_network(network), label)
    for network, label in (
        ("0.0.0.0/8", "unspecified ('this network')"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared address space (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),  # before 240/4, which holds it
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("::ffff:0:0:0/96", "IPv4-translated"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol assignments"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "segment routing"),
        ("fc00::/7", "unique local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    )
)

_NAT64 = IPv6Network("64:ff9b::/96")
_DECIMAL = re.compile(r"[0-9]+")
_OCTAL = re.compile(r"0[0-7]*")
_HEX = re.compile(r"0[xX][0-9a-fA-F]*")


def unmapped(address: IPAddress) -> IPAddress:
    """``::ffff:a.b.c.d`` -> ``a.b.c.d``; any other address unchanged."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def block_reason(address: IPAddress, extra_allowed: tuple[IPv4Network | IPv6Network, ...] = ()) -> str | None:
    """Why ``address`` may not be fetched (e.g. ``"loopback"``), or None when it may."""
    address = unmapped(address)
    if any(address in network for network in extra_allowed):
        return None
    if address in _METADATA:
        return "cloud metadata"
    for network, label in _BLOCKED:
        if address in network:
            return label
    if address.is_multicast or not address.is_global:
        return "not globally reachable"
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        reason = block_reason(embedded, extra_allowed)
        if reason is not None:
            return f"embeds {embedded}, {reason}"
    return None


def _embedded_ipv4(address: IPAddress) -> IPv4Address | None:
    if not isinstance(address, IPv6Address):
        return None
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a URL host denotes, or None when it is a name.

    ``host`` is the URL's host without brackets; an IPv6 zone id (``%eth0``, ``%25eth0``) is dropped.
    Raises ValueError for a host that must be an address but is not a valid one.
    """
    if ":" in host:
        return IPv6Address(host.split("%", 1)[0])
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()  # a trailing dot: "127.0.0.1." is still 127.0.0.1
    if not (_DECIMAL.fullmatch(labels[-1]) or _HEX.fullmatch(labels[-1])):
        return None
    return _ipv4_from_labels(labels)


def _ipv4_from_labels(labels: list[str]) -> IPv4Address:
    """inet_aton: a, a.b (8.24 bits), a.b.c (8.8.16), a.b.c.d (8.8.8.8)."""
    if len(labels) > 4:
        raise ValueError("an IPv4 address has at most 4 parts")
    numbers = [_ipv4_number(label) for label in labels]
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        raise ValueError("IPv4 address part out of range")
    value = last
    for position, number in enumerate(leading):
        value += number << (8 * (3 - position))
    return IPv4Address(value)


def _ipv4_number(label: str) -> int:
    if _HEX.fullmatch(label):
        return int(label[2:] or "0", 16)  # "0x" alone is 0, as in browsers
    if _OCTAL.fullmatch(label):
        return int(label, 8)
    if _DECIMAL.fullmatch(label) and not label.startswith("0"):
        return int(label)
    raise ValueError(f"not a number in an IPv4 address: {label!r}")
