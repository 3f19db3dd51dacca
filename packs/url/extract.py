"""Title and visible text of a fetched body, for the ``url`` pack's output.

Guarantees: HTML (``text/html``, ``application/xhtml+xml``, or no content type and a body that starts
like HTML) is parsed with ``html.parser``: ``title`` is the first ``<title>``'s text, whitespace
collapsed (None without one); ``text`` is the visible text (outside script, style, noscript, template
and title), whitespace collapsed, cut at 2,000 characters. Other textual bodies (``text/*``, JSON,
XML, JavaScript; or no content type and valid UTF-8) give their decoded text, cut at 2,000
characters, and no title. Anything else (images, archives, ...) gives None for both.
Decoding uses the Content-Type charset, else UTF-8, replacing undecodable bytes (a cut body may end
mid-character).
"""

from __future__ import annotations

import codecs
from html.parser import HTMLParser

TEXT_CHARS = 2_000
_FEED_CHARS = 65_536
_HIDDEN = frozenset({"script", "style", "noscript", "template", "title"})
# Inline elements do not separate words ("<b>up</b>." reads "up."); every other tag does.
_INLINE = frozenset(
    [
        "a",
        "abbr",
        "b",
        "bdi",
        "bdo",
        "cite",
        "code",
        "data",
        "dfn",
        "em",
        "font",
        "i",
        "kbd",
        "mark",
        "q",
        "s",
        "samp",
        "small",
        "span",
        "strong",
        "sub",
        "sup",
        "time",
        "u",
        "var",
    ]
)
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_TEXT_TYPES = frozenset({"application/json", "application/xml", "application/javascript"})


def extract(body: bytes, content_type: str | None, charset: str | None) -> tuple[str | None, str | None]:
    """(title, text) of ``body``."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type in _HTML_TYPES or (not media_type and _looks_like_html(body)):
        return _html_title_and_text(_decode(body, charset))
    if _is_textual(media_type):
        return None, _decode(body, charset)[:TEXT_CHARS]
    if not media_type:
        try:
            return None, body.decode("utf-8")[:TEXT_CHARS]
        except UnicodeDecodeError:
            return None, None
    return None, None


def _looks_like_html(body: bytes) -> bool:
    return body[:512].lstrip().lower().startswith((b"<!doctype html", b"<html"))


def _is_textual(media_type: str) -> bool:
    return media_type.startswith("text/") or media_type in _TEXT_TYPES or media_type.endswith(("+json", "+xml"))


def _decode(body: bytes, charset: str | None) -> str:
    try:
        codecs.lookup(charset or "utf-8")
    except LookupError:
        charset = None  # an unknown charset name: fall back rather than fail the fetch
    return body.decode(charset or "utf-8", errors="replace")


def _html_title_and_text(html: str) -> tuple[str | None, str | None]:
    parser = _VisibleText()
    # Feed in slices and stop once there is enough text and the title can no longer come first.
    for start in range(0, len(html), _FEED_CHARS):
        parser.feed(html[start : start + _FEED_CHARS])
        if parser.text_chars > TEXT_CHARS and (parser.title is not None or parser.in_body):
            break
    parser.close()
    text = " ".join("".join(parser.text).split())
    title = " ".join(parser.title.split()) if parser.title is not None else None
    return title, text[:TEXT_CHARS]


class _VisibleText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.text_chars = 0
        self.title: str | None = None
        self.in_body = False
        self._hidden_depth = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden_depth += 1
        if tag == "title" and self.title is None:
            self._in_title, self.title = True, ""
        self.in_body = self.in_body or tag == "body"
        if tag not in _INLINE:
            self.text.append(" ")  # "<p>a</p><p>b</p>" reads "a b"

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN and self._hidden_depth:
            self._hidden_depth -= 1
        if tag == "title":
            self._in_title = False
        if tag not in _INLINE:
            self.text.append(" ")

    def handle_data(self, data: str) -> None:
        if self._in_title and self.title is not None:
            self.title += data
        elif not self._hidden_depth:
            self.text.append(data)
            self.text_chars += len(data)
