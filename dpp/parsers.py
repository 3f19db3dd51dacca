"""The JSON body parser of the API: DRF's, with a bound on nesting.

Python's json module recurses once per level: a body of 256 KiB can nest 100,000 arrays, which raises
RecursionError (a 500) in the parser or later in whatever walks the value. No pack needs more than a few
levels, so a body nested deeper than MAX_DEPTH is refused as malformed before anything else sees it.
"""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError

MAX_DEPTH = 64
_TOO_DEEP = f"JSON nested deeper than {MAX_DEPTH} levels is not accepted."


def nesting_exceeds(value: Any, limit: int) -> bool:
    """True if `value` has more than `limit` levels of objects and arrays (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(_TOO_DEEP) from None
        if isinstance(data, dict | list) and nesting_exceeds(data, MAX_DEPTH):
            raise ParseError(_TOO_DEEP)
        return data
