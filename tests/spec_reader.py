"""An independent, minimal tensorfile reader, written from docs/FORMAT.md alone.

It is an oracle for the tests: it shares no code with ``tensorfile`` and follows the spec's wording, so a
disagreement between it and ``tensorfile.load`` points at either the library or the spec.
``read_spec(path)`` returns ``(value, user_metadata)``; every violation of the spec raises ValueError.
"""
import collections
import json
import math
import re

import ml_dtypes
import numpy as np
import xxhash

MAX_HEADER = 100_000_000
DTYPES = {code: np.dtype(t).newbyteorder("<") for code, t in {
    "BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "U16": np.uint16, "I16": np.int16,
    "U32": np.uint32, "I32": np.int32, "U64": np.uint64, "I64": np.int64,
    "F16": np.float16, "BF16": ml_dtypes.bfloat16, "F32": np.float32, "F64": np.float64,
    "C64": np.complex64, "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
    "F8_E4M3FNUZ": ml_dtypes.float8_e4m3fnuz, "F8_E5M2FNUZ": ml_dtypes.float8_e5m2fnuz,
    "F8_E8M0": ml_dtypes.float8_e8m0fnu}.items()}
HEX16 = re.compile(r"[0-9a-f]{16}")
DEVICE = re.compile(r"[a-z_]+(:[0-9]+)?")  # the spec only says "like `cuda:0`"
KEY_TYPES = ("none", "bool", "int", "float", "str")


def _fail(msg):
    raise ValueError(msg)


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        _fail(f"duplicate JSON key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def _parse_json(text, what):
    """Strict JSON: no duplicate keys, no NaN/Infinity literals, nothing but whitespace after the value."""
    def bad_constant(name):
        _fail(f"{what}: {name} is not JSON")
    decoder = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=bad_constant)
    try:
        doc, end = decoder.raw_decode(text, len(text) - len(text.lstrip(" \t\n\r")))
    except json.JSONDecodeError as e:
        _fail(f"{what} is not valid JSON: {e}")
    if text[end:].strip(" \t\n\r"):
        _fail(f"{what}: trailing data after the JSON value")
    return doc


def _read_header(raw):
    """Sections 1 and 2 (section 6 steps 1-2): returns (header, data buffer)."""
    if len(raw) < 8:
        _fail("file shorter than 8 bytes")
    n = int.from_bytes(raw[:8], "little")
    if n > MAX_HEADER:
        _fail(f"header length {n} exceeds {MAX_HEADER}")
    if 8 + n > len(raw):
        _fail(f"header length {n} runs past the end of the file")
    try:
        header = _parse_json(raw[8:8 + n].decode("utf-8"), "header")
    except UnicodeDecodeError as e:
        _fail(f"header is not UTF-8: {e}")
    if not isinstance(header, dict):
        _fail("header is not a JSON object")
    data, spans = raw[8 + n:], []
    for name, e in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            _fail(f"tensor {name!r}: entry must have exactly dtype, shape, data_offsets")
        if not isinstance(e["dtype"], str) or e["dtype"] not in DTYPES:
            _fail(f"tensor {name!r}: unknown dtype {e['dtype']!r}")
        shape, offs = e["shape"], e["data_offsets"]
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            _fail(f"tensor {name!r}: bad shape {shape!r}")
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_int(o) for o in offs)
                and 0 <= offs[0] <= offs[1]):
            _fail(f"tensor {name!r}: bad data_offsets {offs!r}")
        size = math.prod(shape) * DTYPES[e["dtype"]].itemsize  # Python ints: no overflow
        if size >= 2**64 or offs[1] - offs[0] != size:
            _fail(f"tensor {name!r}: data_offsets do not match dtype and shape")
        spans.append((offs[0], offs[1], name))
    end = 0
    for begin, stop, name in sorted(spans):  # ties: zero-size tensors first
        if begin != end:
            _fail(f"tensor {name!r}: hole or overlap at data byte {begin} (expected {end})")
        end = stop
    if end != len(data):
        _fail(f"data buffer has {len(data)} bytes, the tensors cover {end}")
    return header, data


def _check_record(rec, header, raw_header, names):
    """Section 4 field checks and the header checksum (section 6 step 3)."""
    if not isinstance(rec, dict) or not _is_int(rec.get("version")) or rec["version"] != 1:
        _fail("record is not an object with a known version (1)")
    if not isinstance(rec.get("header_checksum"), str) or not HEX16.fullmatch(rec["header_checksum"]):
        _fail("record header_checksum missing or not 16 lowercase hex digits")
    # (updated by hand when the spec moved from a canonical JSON to the raw header bytes)
    prefix = b'{"__metadata__":{"tensorfile":"{\\"version\\":1,\\"header_checksum\\":\\"'
    digits = rec["header_checksum"].encode()
    if raw_header[: len(prefix) + 16] != prefix + digits:
        _fail("integrity error: the header does not start as a sealed tensorfile header")
    blank = raw_header[: len(prefix)] + b"0" * 16 + raw_header[len(prefix) + 16 :]
    if xxhash.xxh3_64(blank).hexdigest() != rec["header_checksum"]:
        _fail("integrity error: header checksum mismatch")
    if "root" not in rec or not isinstance(rec.get("tensors"), dict) or set(rec["tensors"]) != set(names):
        _fail("record has no root, or its tensor set differs from the header's")
    for name, t in rec["tensors"].items():
        if not isinstance(t, dict) or not HEX16.fullmatch(str(t.get("checksum"))):
            _fail(f"tensor {name!r}: bad checksum field")
        if not isinstance(t.get("framework"), str):
            _fail(f"tensor {name!r}: framework missing or not a string")
        if any(flag in t and not isinstance(t[flag], bool) for flag in ("parameter", "requires_grad", "scalar")):
            _fail(f"tensor {name!r}: parameter/requires_grad/scalar must be booleans")
        if "device" in t and not (isinstance(t["device"], str) and DEVICE.fullmatch(t["device"])):
            _fail(f"tensor {name!r}: bad device {t['device']!r}")
        if "dtype" in t and (t["dtype"] != "complex128" or header[name]["dtype"] != "F64"
                             or header[name]["shape"][-1:] != [2]):
            _fail(f"tensor {name!r}: bad record dtype {t['dtype']!r}")


def _tensor(name, header, data, rec):
    """Section 6 step 4: checksum of the stored bytes, then the array (complex128 applied)."""
    raw = data[slice(*header[name]["data_offsets"])]
    if xxhash.xxh3_64(raw).hexdigest() != rec["tensors"][name]["checksum"]:
        _fail(f"integrity error: checksum mismatch for tensor {name!r}")
    arr = np.frombuffer(raw, DTYPES[header[name]["dtype"]]).reshape(header[name]["shape"]).copy()
    return arr.view("<c16")[..., 0] if rec["tensors"][name].get("dtype") == "complex128" else arr


def _rebuild_shared(groups, arrays):
    """Each group becomes one byte buffer of nbytes; its members become views at their offset and strides."""
    if not isinstance(groups, list):
        _fail("record shared must be a list")
    seen = set()
    for g in groups:
        if not (isinstance(g, dict) and _is_int(g.get("nbytes")) and g["nbytes"] >= 0
                and isinstance(g.get("members"), list) and len(g["members"]) >= 2):
            _fail(f"invalid shared group {g!r}")
        strides = {}
        for m in g["members"]:
            if not (isinstance(m, dict) and m.get("name") in arrays and m["name"] not in seen
                    and _is_int(m.get("offset")) and isinstance(m.get("strides"), list)
                    and all(_is_int(s) for s in m["strides"])
                    and len(m["strides"]) == arrays[m["name"]].ndim):
                _fail(f"invalid shared member {m!r} (unknown, repeated or malformed)")
            seen.add(m["name"])
            arr, item = arrays[m["name"]], arrays[m["name"]].dtype.itemsize
            strides[m["name"]] = [s * item for s in m["strides"]]  # in elements of the API dtype
            if arr.size:
                lo = m["offset"] + sum(min(0, (d - 1) * s) for d, s in zip(arr.shape, strides[m["name"]]))
                hi = m["offset"] + sum(max(0, (d - 1) * s) for d, s in zip(arr.shape, strides[m["name"]])) + item
                if lo < 0 or hi > g["nbytes"]:
                    _fail(f"shared member {m['name']!r} lies outside its storage")
        if g["nbytes"] > 16 * sum(arrays[m["name"]].nbytes for m in g["members"]) + (1 << 20):
            continue  # the spec's MAY: a storage far larger than its members stays separate tensors
        buf, views = np.zeros(g["nbytes"], np.uint8), {}
        for m in g["members"]:
            arr = arrays[m["name"]]
            views[m["name"]] = np.ndarray(arr.shape, arr.dtype, buffer=buf, offset=m["offset"],
                                          strides=strides[m["name"]])
            views[m["name"]][...] = arr
        for name, view in views.items():  # a later member overwrote bytes an earlier one disagrees on
            if view.tobytes() != arrays[name].tobytes():
                _fail(f"shared member {name!r} disagrees with another member on the bytes they share")
        arrays.update(views)


def _node(node, get, key=False):
    """Section 5. `get(name)` returns the tensor for a name; `key` restricts to KEY nodes."""
    kind = node.get("type") if isinstance(node, dict) else None
    items = node.get("items") if kind in ("dict", "ordered_dict", "list", "tuple") else None
    if key and kind not in KEY_TYPES + ("tuple",) or items is not None and not isinstance(items, list):
        _fail(f"invalid {'key ' if key else ''}node {node!r}")
    if kind == "tensor":
        return get(node.get("name"))
    if kind in ("dict", "ordered_dict"):
        if not all(isinstance(kv, list) and len(kv) == 2 for kv in items):
            _fail(f"invalid dict items in {node!r}")
        cls = collections.OrderedDict if kind == "ordered_dict" else dict
        return cls((_node(k, get, key=True), _node(v, get)) for k, v in items)
    if kind in ("list", "tuple"):
        values = [_node(v, get, key) for v in items]
        return values if kind == "list" else tuple(values)
    if kind == "none":
        return None
    value = node.get("value")
    if (kind == "bool" and isinstance(value, bool) or kind == "int" and _is_int(value)
            or kind == "str" and isinstance(value, str)):
        return value
    if kind == "float" and (value in ("nan", "inf", "-inf") or isinstance(value, (int, float))
                            and not isinstance(value, bool)):
        return float(value)
    _fail(f"invalid structure node {node!r}")


def _tie(rec, header, arrays):
    """FORMAT.md, "Tied tensors": a tied name is its first tensor again (same fields, not tied, not shared)."""
    shared = {m.get("name") for g in rec.get("shared", []) for m in g.get("members", [])}
    for name, info in rec["tensors"].items():
        if "tied_to" not in info:
            continue
        first = info["tied_to"]
        if not isinstance(first, str) or first not in rec["tensors"] or first == name or "tied_to" in rec["tensors"][first]:
            _fail(f"tensor {name!r}: tied_to must name an untied tensor of the file")
        if {k: v for k, v in info.items() if k != "tied_to"} != rec["tensors"][first]:
            _fail(f"tensor {name!r}: its fields differ from those of {first!r}, its tie")
        if (header[name]["dtype"], header[name]["shape"]) != (header[first]["dtype"], header[first]["shape"]):
            _fail(f"tensor {name!r}: its dtype or shape differs from {first!r}'s")
        if name in shared or first in shared:
            _fail(f"tensor {name!r}: a tied tensor cannot be in a shared group")
        arrays[name] = arrays[first]


def read_spec(path):
    with open(path, "rb") as f:
        raw = f.read()
    header, data = _read_header(raw)
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        _fail("__metadata__ must be an object of strings")
    user_meta = {k: v for k, v in meta.items() if k != "tensorfile"}
    names = sorted((k for k in header if k != "__metadata__"), key=lambda k: (header[k]["data_offsets"], k))
    if "tensorfile" not in meta:  # plain safetensors: a flat dict, in data order (the spec names no order)
        return {n: np.frombuffer(data[slice(*header[n]["data_offsets"])], DTYPES[header[n]["dtype"]])
                .reshape(header[n]["shape"]).copy() for n in names}, user_meta
    rec = _parse_json(meta["tensorfile"], "record")
    n = int.from_bytes(raw[:8], "little")
    _check_record(rec, header, raw[8 : 8 + n], names)
    arrays = {n: _tensor(n, header, data, rec) for n in names}
    _rebuild_shared(rec.get("shared", []), arrays)
    _tie(rec, header, arrays)
    cache = {}  # one object per name, however often the structure names it

    def get(name):
        if name not in arrays:
            _fail(f"the structure names tensor {name!r}, which the file does not hold")
        if name not in cache:
            cache[name] = arrays[name][()] if rec["tensors"][name].get("scalar") else arrays[name]
        return cache[name]
    return _node(rec["root"], get), user_meta
