"""strict_json's fast duplicate check: it never accepts a key written twice, on random JSON with escapes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorfile.errors import FormatError
from tensorfile.format.header import _STRING, _count_keys, _keys_in_text, strict_json

# Quotes, backslashes, colons and spaces are what can fool a count of keys in text.
_text = st.text(alphabet=['a', '"', "\\", ":", " ", "é", "\n", "\t", "}"], max_size=6)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=12,
)
_separators = st.sampled_from([(",", ":"), (", ", ": "), (",", " :"), (" , ", " : ")])


def _tokens(text: str) -> int:
    found = _STRING.findall(text)
    return len(found) - found.count("")


@settings(max_examples=600, deadline=None)
@given(_json, st.booleans(), _separators)
def test_count_of_keys_never_falls_short(doc, ascii_only, separators):
    text = json.dumps(doc, ensure_ascii=ascii_only, separators=separators)
    keys = _count_keys(json.loads(text))
    assert _tokens(text) == keys  # the tokenizer is exact
    assert _keys_in_text(text) >= keys
    assert strict_json(text) == doc


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_text, _json, min_size=1, max_size=4), st.data(), st.booleans(), _separators)
def test_a_key_written_twice_is_refused(doc, data, ascii_only, separators):
    key = data.draw(st.sampled_from(sorted(doc)))
    text = json.dumps(doc, ensure_ascii=ascii_only, separators=separators)
    duplicate = json.dumps(key, ensure_ascii=ascii_only) + separators[1] + "0" + separators[0]
    nested = data.draw(st.booleans())
    text = text[:1] + duplicate + text[1:]  # the same key again, first in the object
    if nested:
        text = '{"outer"' + separators[1] + text + "}"
    with pytest.raises(FormatError, match="duplicate key"):
        strict_json(text)


def test_escaped_quotes_before_a_colon_are_not_keys():
    # The value holds \": and \\\":, which a plain count of '":' would take for keys.
    text = json.dumps({"a": 'x":y', "b": 'x\\":y', "c": {"d": ":z"}}, separators=(",", ":"))
    assert _keys_in_text(text) == 5  # 4 keys, and the value ":z" starts with a colon
    assert strict_json(text)["b"] == 'x\\":y'
    with pytest.raises(FormatError, match="duplicate key 'a'"):
        strict_json('{"a":"x\\":y","a":1}')


@pytest.mark.parametrize("text", ['{"a":"\\ud800"}', '{"\\udfff":1}', '["\\\\", "\\udc00"]'])
def test_lone_surrogates_are_refused(text):
    with pytest.raises(FormatError, match="lone surrogate"):
        strict_json(text)


def test_a_surrogate_pair_is_text():
    assert strict_json('{"a":"\\ud83d\\ude00"}') == {"a": "\U0001f600"}


@pytest.mark.parametrize("run", [1, 2, 5, 6, 7, 40, 20_000])
def test_long_runs_of_backslashes_are_counted_in_linear_time(run):
    import time

    key = "\\" * run
    text = json.dumps({key: 1, "a": key, "b": ":" + key}, separators=(",", ":"))
    start = time.perf_counter()
    assert _keys_in_text(text) >= 3 and strict_json(text) == {key: 1, "a": key, "b": ":" + key}
    dup = "{" + json.dumps(key) + ":1," + json.dumps(key) + ":2}"
    with pytest.raises(FormatError, match="duplicate key"):
        strict_json(dup)
    assert time.perf_counter() - start < 2.0  # was quadratic: 10.7 s for an 80 KB header
    assert _keys_in_text('{"x":"' + "\\\\" * run + '\\":"}') == 1  # an escaped quote after an even run of pairs


def test_a_doc_built_twice_is_not_held_twice():
    # A value starting with ':' makes the count differ, so the text is parsed again; the result is still right.
    assert strict_json('{"a":":b","c":{"d":":"}}') == {"a": ":b", "c": {"d": ":"}}
