"""Title and text extraction from fetched bodies."""

from __future__ import annotations

import pytest

from packs.url.extract import TEXT_CHARS, extract


def test_html_title_and_visible_text() -> None:
    html = (
        b"<html><head><title>A &amp; B</title><style>.x{}</style></head><body>"
        b"<noscript>enable js</noscript><template><p>hidden</p></template>"
        b"<div>One</div><div>Two <a href='/'>link</a>, <em>three</em></div><script>alert(1)</script></body></html>"
    )

    assert extract(html, "text/html", None) == ("A & B", "One Two link, three")


def test_html_without_title() -> None:
    assert extract(b"<p>Just text</p>", "text/html; charset=utf-8", "utf-8") == (None, "Just text")


def test_html_is_sniffed_when_there_is_no_content_type() -> None:
    assert extract(b"  <!DOCTYPE html><title>T</title><p>x</p>", None, None) == ("T", "x")


def test_the_charset_of_the_content_type_is_used() -> None:
    body = "<title>café</title><p>naïve</p>".encode("latin-1")

    assert extract(body, "text/html; charset=iso-8859-1", "iso-8859-1") == ("café", "naïve")


def test_an_unknown_charset_falls_back_to_utf8() -> None:
    assert extract("<p>é</p>".encode(), "text/html; charset=klingon", "klingon") == (None, "é")


def test_text_is_cut_at_2000_characters() -> None:
    title, text = extract(b"<title>t</title><p>" + b"word " * 2000 + b"</p>", "text/html", None)

    assert title == "t"
    assert text is not None
    assert len(text) == TEXT_CHARS == 2000


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "application/problem+json", "text/csv"])
def test_textual_bodies_are_their_own_text(content_type: str) -> None:
    body = b'{"a":  1}\n' * 300  # 3,000 characters, kept as they are (no whitespace folding)

    title, text = extract(body, content_type, None)

    assert title is None
    assert text == body.decode()[:2000]


@pytest.mark.parametrize(("body", "content_type"), [(b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xfe\x00", None)])
def test_binary_bodies_have_no_text(body: bytes, content_type: str | None) -> None:
    assert extract(body, content_type, None) == (None, None)


def test_a_body_cut_mid_character_still_decodes() -> None:
    body = "<p>€</p>".encode()[:5]  # "<p>" + 2 of the 3 bytes of "€"

    assert extract(body, "text/html", None) == (None, "\ufffd")
