"""The JSON the API accepts: what DRF's parser accepts, minus two ways to cost a 500.

- Nesting deep enough to exhaust Python's recursion (``[[[[…`` 100,000 deep) raised
  ``RecursionError`` through DRF's parser.
- JSON may spell a lone UTF-16 surrogate (``"\\ud800"``), which Python decodes to a string that
  can't be encoded again: it blew up wherever a value was hashed, stored or logged.
Both are ``400`` ("JSON parse error - …") before any view sees the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def _has_lone_surrogate(data: Any) -> bool:
    stack = [data]
    while stack:  # iterative: the data may be deep
        item = stack.pop()
        if isinstance(item, str):
            if any("\ud800" <= ch <= "\udfff" for ch in item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class StrictJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
        if _has_lone_surrogate(data):
            raise ParseError("JSON parse error - a string holds a lone surrogate (not valid Unicode)")
        return data
