"""Messages quote at most 200 characters of any value a file holds (errors.clip_values)."""

from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest

import tensorfile
from tensorfile.errors import MAX_VALUE_CHARS, FormatError, clip_values


def _longest_value(message: str) -> int:
    """Length of the longest quoted string, bracketed group or space-free run left in ``message``."""
    runs = re.findall(r"'[^'\n]*'|\"[^\"\n]*\"|\S+", message)
    depth, start, longest = 0, 0, max(map(len, runs), default=0)
    for i, ch in enumerate(message):
        if ch in "[(":
            depth, start = depth + 1, i if depth == 0 else start
        elif ch in "])" and depth:
            depth -= 1
            if depth == 0:
                longest = max(longest, i + 1 - start)
    return longest


def _header_file(path, header: dict) -> None:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * 64)


@pytest.mark.parametrize(
    "header",
    [
        {"a" * 5000: {"dtype": "F32", "shape": [2], "data_offsets": [0, 9]}},  # a huge name, bad offsets
        {"w": {"dtype": "Q" * 3000, "shape": [2], "data_offsets": [0, 8]}},  # a huge dtype code
        {"w": {"dtype": "F32", "shape": [1] * 3000, "data_offsets": [0, 8]}},  # a huge shape
        {"__metadata__": {"x": ["y"] * 2000}, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
    ],
)
def test_a_hostile_header_gives_a_message_without_long_values(tmp_path, header):
    path = tmp_path / "bad.safetensors"
    _header_file(path, header)
    with pytest.raises(FormatError) as err:
        tensorfile.load(path)
    message = str(err.value)
    assert str(path) in message
    assert _longest_value(message) <= MAX_VALUE_CHARS + 30, message[:500]


def test_clip_values_cuts_each_kind_of_value_and_keeps_the_rest():
    matrix = repr(np.ones((300, 300)))
    message = f"x.h5: tensor {'n' * 500!r} expected shape (3, 4), found {matrix} in [{', '.join(['7'] * 400)}] ok"
    clipped = clip_values(message)
    assert clipped.startswith("x.h5: tensor 'nnn") and clipped.endswith(" ok")
    assert "expected shape (3, 4), found array([[1., 1." in clipped
    assert clipped.count("more characters)") == 3
    assert _longest_value(clipped) <= MAX_VALUE_CHARS + 30
    assert clip_values("short 'value' [1, 2]") == "short 'value' [1, 2]"


def test_every_tensorfile_error_is_clipped_but_a_parameter_report_lists_every_name():
    assert len(str(FormatError("f: " + repr(list(range(1000)))))) < 300
    long_report = "missing: " + repr([f"layer{i}.weight" for i in range(100)])
    assert str(tensorfile.ParameterMismatchError(long_report, None)) == long_report
