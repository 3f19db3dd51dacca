"""The url pack's inputs, catalog entry and price arithmetic."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from packs.base import FieldError, UrlPolicy
from packs.url import UrlPack, blocked_literal, byte_cap, price_micros
from tests.helpers.packs import LOOPBACK_ONE
from tests.packs.url.servers import FakeResolver

PACK = UrlPack()
HTTPS_ONLY = UrlPolicy()
HTTP_ALLOWED = UrlPolicy(allow_http=True)


def test_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(PACK.input_schema)
    assert PACK.input_schema["additionalProperties"] is False


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com",
        "https://example.com:8443/a/b?c=d#e",
        "HTTPS://Example.COM/",
        "https://bücher.example/straße",  # IDNA host, non-ASCII path
        "https://8.8.8.8/",
        "https://[2606:4700:4700::1111]/",
        "https://internal.corp/",  # a name is not resolved at submit
    ],
)
def test_valid_urls(url: str) -> None:
    assert PACK.validate({"url": url}, policy=HTTPS_ONLY) == []


def _url_refused(url: str, message: str, policy: UrlPolicy = HTTPS_ONLY) -> tuple[Any, UrlPolicy, list[FieldError]]:
    return {"url": url}, policy, [FieldError("inputs.url", message)]


CREDENTIALS = "credentials in the URL are refused"
UNSAFE_CHARACTERS = "URL contains whitespace, control characters or a backslash"


@pytest.mark.parametrize(
    ("inputs", "policy", "expected"),
    [
        _url_refused("http://example.com/", "http is not allowed: https only"),
        _url_refused("ftp://example.com/", "must match ^[Hh][Tt][Tt][Pp][Ss]?://", HTTP_ALLOWED),
        _url_refused("https://user:pw@example.com/", CREDENTIALS),
        _url_refused("https://user@example.com/", CREDENTIALS),
        _url_refused("https://exa mple.com/", UNSAFE_CHARACTERS),
        _url_refused("https://evil.com\\@127.0.0.1/", UNSAFE_CHARACTERS),
        _url_refused("https://:443/", "URL has no host"),
        _url_refused("https://example.com:0/", "port 0 is not a valid port"),
        _url_refused("https://ex%41mple.com/", "invalid host name"),
        _url_refused("https://" + "a" * 2041, "must be at most 2048 characters"),
        ({"url": "https://example.com", "max_bytes": 0}, HTTPS_ONLY, [FieldError("inputs.max_bytes", "must be >= 1")]),
        (
            {"url": "https://example.com", "max_bytes": 10_485_761},
            HTTPS_ONLY,
            [FieldError("inputs.max_bytes", "must be <= 10485760")],
        ),
        (
            {"url": "https://example.com", "max_bytes": "10"},
            HTTPS_ONLY,
            [FieldError("inputs.max_bytes", "must be of type integer")],
        ),
        (
            {"url": "https://example.com", "follow": True},
            HTTPS_ONLY,
            [FieldError("inputs", "unknown member(s): 'follow'")],
        ),
        ({}, HTTPS_ONLY, [FieldError("inputs.url", "is required")]),
        ([], HTTPS_ONLY, [FieldError("inputs", "must be of type object")]),
    ],
)
def test_invalid_inputs(inputs: Any, policy: UrlPolicy, expected: list[FieldError]) -> None:
    assert PACK.validate(inputs, policy=policy) == expected


def test_port_out_of_range_is_reported_on_the_url() -> None:
    errors = PACK.validate({"url": "https://example.com:70000/"}, policy=HTTPS_ONLY)

    assert [error.field for error in errors] == ["inputs.url"]
    assert errors[0].message.startswith("malformed URL")


def test_validate_never_resolves_a_name() -> None:
    resolver = FakeResolver({})
    policy = UrlPolicy(resolver=resolver)

    assert PACK.validate({"url": "https://metadata.internal/"}, policy=policy) == []
    assert resolver.calls == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://0x7f.1/", "127.0.0.1 is a blocked address (loopback)"),
        ("http://169.254.169.254/latest", "169.254.169.254 is a blocked address (cloud metadata)"),
        ("https://[::ffff:10.0.0.1]/", "::ffff:a00:1 is a blocked address (private)"),
        ("https://8.8.8.8/", None),
        ("https://example.com/", None),
        ("not a url", None),  # validate reports that one on its own
    ],
)
def test_blocked_literal(url: str, expected: str | None) -> None:
    assert blocked_literal(url) == expected


def test_blocked_literal_honours_the_test_networks() -> None:
    assert blocked_literal("http://127.0.0.1:8000/", policy=UrlPolicy(extra_allowed_networks=LOOPBACK_ONE)) is None
    assert blocked_literal("http://127.0.0.2:8000/", policy=UrlPolicy(extra_allowed_networks=LOOPBACK_ONE)) == (
        "127.0.0.2 is a blocked address (loopback)"
    )


@pytest.mark.parametrize(
    ("body_bytes", "micros"),
    [(0, 2_000), (1, 2_100), (10_240, 2_100), (10_241, 2_200), (1_048_576, 12_300), (10_485_760, 104_400)],
)
def test_price_is_2000_plus_100_per_started_10_kib(body_bytes: int, micros: int) -> None:
    # 1_048_576 / 10_240 = 102.4 -> 103 blocks; 10_485_760 / 10_240 = 1_024 blocks exactly
    assert price_micros(body_bytes) == micros


@pytest.mark.parametrize(
    ("max_bytes", "max_cost_micros", "cap"),
    [
        (1_048_576, 1_000_000, 1_048_576),  # the reservation buys 9_980 blocks: max_bytes decides
        (1_048_576, 2_100, 10_240),  # one block
        (1_048_576, 2_199, 10_240),  # still one block
        (5, 2_100, 5),
        (1_048_576, 2_099, 0),  # below the floor: nothing
    ],
)
def test_byte_cap(max_bytes: int, max_cost_micros: int, cap: int) -> None:
    assert byte_cap(max_bytes, max_cost_micros) == cap


def test_floor_and_catalog_entry() -> None:
    assert PACK.price_floor_micros({"url": "https://example.com"}) == 2_100
    assert PACK.pricing() == {
        "model": "per_block_read",
        "formula": "0.0020 + 0.0001 × ceil(body bytes read / 10240)",
        "base_usd": "0.0020",
        "per_block_usd": "0.0001",
        "block_bytes": 10_240,
        "floor_usd": "0.0021",
    }
    assert (PACK.pack_type, PACK.max_timebox_sec) == ("url", 90)
