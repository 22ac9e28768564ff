"""The pickle machine (safepickle/machine.py): what it reads, exactly, and what it refuses, without running code."""

from __future__ import annotations

import argparse
import collections
import io
import pickle
import struct
import time
import zipfile

import ml_dtypes
import numpy as np
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorfile
from tensorfile.errors import FormatError, LimitError, UnsafeFileError
from tensorfile.safepickle.machine import load_pickle
from tensorfile.safepickle.numpy_objects import python_table, resolve


def plain(data: bytes) -> object:
    return resolve(load_pickle(data, python_table("t"), what="t"), "t", 200)


# -- an oracle: everything the standard pickler writes of plain values reads back equal -------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**200), 2**200), st.floats(allow_nan=False), st.text(max_size=20),
    st.binary(max_size=20), st.complex_numbers(allow_nan=False),
)
keys = st.one_of(st.integers(-1000, 1000), st.text(max_size=8), st.tuples(st.integers(0, 5), st.text(max_size=3)))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(keys, inner, max_size=4),
        st.frozensets(st.integers(0, 100), max_size=4), st.sets(st.text(max_size=4), max_size=4),
        st.dictionaries(keys, inner, max_size=3).map(collections.OrderedDict),
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(values, st.integers(0, 5))
def test_every_protocol_of_plain_values_reads_back_equal(value, protocol):
    assert plain(pickle.dumps(value, protocol=protocol)) == value


def test_shared_and_cyclic_values_stay_shared():
    inner = [1, 2]
    back = plain(pickle.dumps({"a": inner, "b": inner}, protocol=4))
    assert back == {"a": [1, 2], "b": [1, 2]} and back["a"] is back["b"]
    cyclic: list = []
    cyclic.append(cyclic)
    back = plain(pickle.dumps(cyclic, protocol=2))
    assert back[0] is back


def test_what_torch_weights_only_reads_is_read(tmp_path):
    torch = pytest.importorskip("torch")
    state = {
        "counter": collections.Counter({"a": 3, 7: 1}),
        "set": {1, 2, 3},
        "frozen": frozenset({"x"}),
        "complex": complex(1.5, -2),
        "size": torch.Size([2, 3]),
        "device": torch.device("cpu"),
        "dtype": torch.bfloat16,
        "np_array": np.arange(6, dtype=np.float32).reshape(2, 3),
        "np_fortran": np.asfortranarray(np.arange(6, dtype=">i4").reshape(2, 3)),
        "np_scalar": np.float64(2.5),
        "np_int": np.int16(-7),
        "args": argparse.Namespace(lr=0.1, name="run"),
        "slice": slice(1, 9, 2),
        "t": torch.arange(4, dtype=torch.float32),
    }
    path = tmp_path / "state.pt"
    torch.save(state, path)
    oracle = torch.load(path, weights_only=False)  # our own file: torch's full unpickler is the oracle
    back = tensorfile.load(path, framework="numpy")
    assert back["counter"] == oracle["counter"] and type(back["counter"]) is collections.Counter
    assert back["set"] == {1, 2, 3} and back["frozen"] == frozenset({"x"}) and back["complex"] == complex(1.5, -2)
    assert back["size"] == (2, 3) and back["device"] == "cpu" and back["slice"] == slice(1, 9, 2)
    np.testing.assert_array_equal(back["np_array"], oracle["np_array"])
    np.testing.assert_array_equal(back["np_fortran"], oracle["np_fortran"])
    assert back["np_fortran"].dtype == np.dtype("int32")
    assert back["np_scalar"] == 2.5 and back["np_scalar"].dtype == np.float64
    assert back["np_int"] == -7 and back["np_int"].dtype == np.int16
    assert back["args"] == {"lr": 0.1, "name": "run"}
    np.testing.assert_array_equal(back["t"], np.arange(4, dtype=np.float32))


# -- hostile pickles ------------------------------------------------------------------------------------


def torch_zip(path, pickled: bytes, storages=()) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickled)
        zf.writestr("archive/byteorder", "little")
        for name, data in storages:
            zf.writestr(f"archive/data/{name}", data)
    return str(path)


def test_build_on_a_torch_dtype_cannot_change_numpy(tmp_path):
    # GLOBAL torch.bfloat16; a state of 1 ("itemsize") ; BUILD -- on a process-wide descriptor it would corrupt the heap
    attack = b"\x80\x02ctorch\nbfloat16\n}X\x08\x00\x00\x00itemsizeK\x01sb."
    for path in (torch_zip(tmp_path / "z.pt", attack), tmp_path / "legacy.pt"):
        if str(path).endswith("legacy.pt"):
            path.write_bytes(b"\x80\x02\x8a\x01\x000" + attack[2:])  # sniffed as legacy; in the magic number's pickle
        with pytest.raises(UnsafeFileError, match="BUILD|refuses the global torch.bfloat16"):
            tensorfile.load(path, framework="numpy")
    assert np.dtype(ml_dtypes.bfloat16).itemsize == 2
    np.testing.assert_array_equal(np.array([1.5], np.float32).astype(ml_dtypes.bfloat16).astype(np.float32), [1.5])


@pytest.mark.parametrize(
    "attack, error, message",
    [
        (b"cos\nsystem\n(S'true'\ntR.", UnsafeFileError, "os.system"),
        (b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.", UnsafeFileError, "builtins.eval"),
        (b"(S'x'\nios\nsystem\n.", UnsafeFileError, "INST"),
        (b"(cos\nsystem\nS'x'\no.", UnsafeFileError, "os.system"),
        (b"\x80\x02\x82\x01.", UnsafeFileError, "EXT1"),
        (b"\x80\x02cbuiltins\nset\n)R}b.", UnsafeFileError, "BUILD on set"),  # BUILD on an object of the table's
        (b"\x80\x02}(K\x01K\x02u)R.", UnsafeFileError, "not a known-safe callable"),  # REDUCE on a dict
        (b"\x80\x02]}\x85R.", UnsafeFileError, "not a known-safe callable"),
        (b"\x80\x02ccollections\nOrderedDict\nK\x01a.", UnsafeFileError, "APPEND"),  # APPEND to a function
    ],
)
def test_code_and_foreign_objects_are_refused(attack, error, message):
    with pytest.raises(error, match=message):
        load_pickle(attack, python_table("t"), what="t")


def test_lengths_are_checked_before_anything_is_allocated():
    rss = psutil.Process().memory_info().rss
    start = time.perf_counter()
    for attack in [
        b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"abc.",  # BINBYTES8
        b"\x80\x04\x8d" + struct.pack("<Q", 2**40) + b"abc.",  # BINUNICODE8
        b"\x80\x05\x96" + struct.pack("<Q", 2**62) + b"abc.",  # BYTEARRAY8
        b"\x80\x04\x95" + struct.pack("<Q", 2**40) + b"K\x01.",  # FRAME
        b"\x80\x02\x8b" + struct.pack("<i", 2**30) + b"\x01.",  # LONG4
        b"\x80\x02B" + struct.pack("<i", -5) + b".",  # BINBYTES, negative
        b"\x80\x02T" + struct.pack("<i", 2**31 - 1) + b".",
    ]:
        with pytest.raises(FormatError):
            load_pickle(attack, {}, what="t")
    assert time.perf_counter() - start < 1 and psutil.Process().memory_info().rss - rss < 32 << 20


def test_a_memo_index_of_2_to_the_26_costs_one_entry():
    rss = psutil.Process().memory_info().rss
    data = b"\x80\x02K\x07r" + struct.pack("<I", 2**26) + b"0j" + struct.pack("<I", 2**26) + b"."
    assert load_pickle(data, {}, what="t") == 7
    assert psutil.Process().memory_info().rss - rss < 32 << 20
    with pytest.raises(FormatError, match="memo entry 5 was never stored"):
        load_pickle(b"\x80\x02h\x05.", {}, what="t")


def test_nesting_deep_tuples_and_marks_is_refused_not_a_crash():
    deep_tuple = b"\x80\x02K\x01" + b"\x85" * 100_000 + b"."  # ((((1,),),)...) would recurse in C when hashed
    with pytest.raises(FormatError, match="nested more than 200 deep"):
        load_pickle(deep_tuple, {}, what="t")
    with pytest.raises(FormatError, match="nested more than"):
        load_pickle(b"(" * 100_000 + b".", {}, what="t")
    deep_list = b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b"."  # fine for the machine, refused when walked
    with pytest.raises(FormatError, match="nested more than 200 deep"):
        plain(deep_list)


def test_strings_are_charged_to_the_budget():
    limits = tensorfile.Limits(max_bytes=1000)
    data = b"\x80\x02" + b"C\xff" + b"x" * 255 + b"0" + (b"C\xff" + b"x" * 255 + b"0") * 5 + b"N."
    with pytest.raises(LimitError, match="Limits.max_bytes"):
        load_pickle(data, {}, what="t", budget=limits.budget("t", len(data)))
    assert load_pickle(data, {}, what="t") is None


def test_malformed_pickles_raise_format_errors_naming_the_byte():
    for bad, match in [
        (b"", "without STOP"),
        (b"\x80\x02K", "truncated"),
        (b"\x80\x02.", "stack is empty"),
        (b"\x80\x02K\x01K\x02.", "more items on the stack"),
        (b"\x80\x02}]]s.", "unhashable"),  # a list as a dict key
        (b"\x80\x02\x8f]\x90.", "no MARK"),
        (b"\x80\x02\xff.", "opcode"),
        (b"\x80\x09N.", "protocol 9"),
        (b"I12x\n.", "not an integer"),
        (b"\x80\x02(]]\x91.", "unhashable"),
    ]:
        with pytest.raises(FormatError, match=match):
            load_pickle(bad, {}, what="t")


def test_a_file_positioned_stream_stops_right_after_stop():
    f = io.BytesIO(pickle.dumps(1, protocol=2) + pickle.dumps("two", protocol=2) + b"rest")
    assert load_pickle(f, {}, what="t") == 1 and load_pickle(f, {}, what="t") == "two" and f.read() == b"rest"
