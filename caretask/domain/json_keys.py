"""Duplicate object keys in a JSON body: RFC 8259 leaves their meaning open, and a parser
that keeps the last one (orjson does, without saying so) would store a Task the client did
not mean, e.g. `"status": "requested", ..., "status": "completed"`. FHIR JSON forbids them.

orjson reports nothing, and a second parse that does (json's object_pairs_hook) cost more
than the validation itself. Instead: count the keys the parse kept, and compare with the
keys in the text. Counting `":` in the bytes is exact for compact keys (`"name":`), so the
common body is checked by one scan of its bytes; a body with a space before a colon, or `":`
inside a string, is counted by tokenizing its strings, which is slower but still far cheaper
than a second parse.
"""

from __future__ import annotations

import re
from typing import Any

_SPACED_KEY = re.compile(rb'"\s+:')
# every string literal in order; in valid JSON a string followed by a colon is a key
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"(\s*:)?', re.DOTALL)


def kept_keys(value: Any) -> int:
    """The number of object keys in a parsed JSON value, at every depth (a loop, not
    recursion: orjson accepts 1,024 levels, more than Python's default stack)."""
    count, stack = 0, [value]
    pop, push = stack.pop, stack.append
    while stack:
        node = pop()
        if type(node) is dict:  # orjson makes exactly dict and list
            count += len(node)
            items = node.values()
        else:
            items = node
        for item in items:
            kind = type(item)
            if kind is dict or kind is list:
                push(item)
    return count


def has_duplicate_keys(raw: bytes, parsed: Any) -> bool:
    """True if some object in `raw` (valid JSON, parsed as `parsed`) repeats a key."""
    if type(parsed) is not dict and type(parsed) is not list:
        return False
    kept = kept_keys(parsed)
    compact = raw.count(b'":')
    if compact == kept and _SPACED_KEY.search(raw) is None:
        return False  # every key is compact and counted: none was dropped
    written = sum(1 for match in _STRING.finditer(raw) if match.group(1) is not None)
    return written > kept
