"""The JSON body parser of the API: DRF's, refusing what would break whatever reads the value next.

- Nesting: Python's json module recurses once per level: a body of 256 KiB can nest 100,000 arrays, which raises
  RecursionError (a 500) in the parser or later in whatever walks the value. No pack needs more than a few
  levels, so a body nested deeper than MAX_DEPTH is refused as malformed before anything else sees it.
- Unpaired surrogates: json accepts "\\ud800" and yields a str that cannot be encoded as UTF-8, so hashing the
  payload (the idempotency hash) or storing it would fail with a 500.
- Integers of more than 4,300 digits: Python refuses to convert them (a guard against quadratic time), and DRF's
  message then told the client to call `sys.set_int_max_str_digits()`; the refusal says what is wrong instead.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError, UnsupportedMediaType

MAX_DEPTH = 64
_TOO_DEEP = f"JSON nested deeper than {MAX_DEPTH} levels is not accepted."
_NOT_UNICODE = "JSON text with an unpaired surrogate escape (e.g. \\ud800) is not valid Unicode."
_INT_DIGITS = sys.get_int_max_str_digits()
_TOO_LONG_NUMBER = f"JSON numbers of more than {_INT_DIGITS} digits are not accepted."


def body_problem(value: Any, limit: int = MAX_DEPTH) -> str | None:
    """Why a parsed body is refused, or None: more than `limit` levels of objects and arrays, or a string (or key)
    holding an unpaired surrogate, which json accepts as an escape but no UTF-8 text can store. Iterative."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return _NOT_UNICODE
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > limit:
            return _TOO_DEEP
        if isinstance(item, dict):
            stack.extend((key, depth) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        else:
            stack.extend((child, depth + 1) for child in item)
    return None


def declared_length(meta: Mapping[str, Any]) -> int | None:
    """The request's Content-Length as an int (0 when absent), or None when it is not a number."""
    try:
        return int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        request = (parser_context or {}).get("request")
        coding = request.META.get("HTTP_CONTENT_ENCODING", "") if request is not None else ""
        if coding.strip().lower() not in ("", "identity"):
            # Read as JSON, gzip bytes would be a misleading 400 (and a plain body labelled gzip a lie accepted):
            # RFC 9110 §8.4.1 answers a content coding the server does not take with 415.
            detail = f"Content-Encoding {coding[:32]!r} is not accepted: send plain JSON."
            raise UnsupportedMediaType(media_type or self.media_type, detail)
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(_TOO_DEEP) from None
        except ParseError as exc:
            if "int_max_str_digits" in str(exc.detail):
                raise ParseError(_TOO_LONG_NUMBER) from None
            raise
        problem = body_problem(data)
        if problem is not None:
            raise ParseError(problem)
        return data
