"""Duplicate keys in a JSON body are found (domain.json_keys), however the text is spaced
and whatever its strings hold; bodies without them are never refused."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from caretask.domain.json_keys import has_duplicate_keys, kept_keys

TEXT = st.text(alphabet=st.sampled_from('ab":\\ {}[],\n\u00e9'), max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)
OBJECTS = st.dictionaries(TEXT, JSON_VALUES, min_size=1, max_size=5)
LAYOUTS = [
    lambda v: orjson.dumps(v),
    lambda v: json.dumps(v, indent=2).encode(),
    lambda v: json.dumps(v, separators=(" , ", " : "), ensure_ascii=False).encode(),
]


def check(raw: bytes) -> bool:
    return has_duplicate_keys(raw, orjson.loads(raw))


@given(OBJECTS, st.sampled_from(LAYOUTS))
def test_a_body_without_repeated_keys_is_accepted_in_any_layout(value: Any, layout: Any) -> None:
    assert not check(layout(value))


@given(OBJECTS, st.sampled_from(LAYOUTS), st.booleans(), st.sampled_from([b":", b" : "]))
def test_a_repeated_key_is_found_in_any_layout(
    value: dict[str, Any], layout: Any, nest: bool, colon: bytes
) -> None:
    key = next(iter(value))
    text = layout(value)  # starts with "{" in every layout
    repeated = b"{" + orjson.dumps(key) + colon + b"1," + text[1:]
    if nest:
        repeated = b'{"outer": [' + repeated + b"]}"
    assert check(repeated)


def test_the_last_status_would_have_won_silently() -> None:
    assert check(b'{"resourceType": "Task", "status": "requested", "status": "completed"}')


def test_a_value_holding_quote_colon_text_is_not_a_key() -> None:
    assert not check(b'{"description": "say \\":\\" twice", "note": [{"text": "a\\": b"}]}')


def test_keys_are_counted_at_every_depth_without_recursion() -> None:
    deep: Any = {"a": 1}
    for _ in range(5000):
        deep = {"x": [deep]}
    assert kept_keys(deep) == 5001


def test_scalars_and_empty_containers_have_no_keys() -> None:
    assert not check(b'"text"')
    assert not check(b"[]")
    assert not check(b"{}")
