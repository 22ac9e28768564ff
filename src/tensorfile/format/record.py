"""tensorfile's own entry in ``__metadata__``: structure, checksums, sharing.

A tensorfile file stores one ``__metadata__`` entry under the key
:data:`RECORD_KEY` whose value is a JSON document (a string, as safetensors
requires)::

    {
      "version": 1,
      "header_checksum": "16 hex digits",  # XXH3-64 of the header bytes, see below
      "root": NODE,                       # the structure, see tensorfile.tree
      "tensors": {NAME: {
          "checksum": "16 hex digits",    # XXH3-64 of the stored bytes
          "framework": "numpy" | "torch" | ...,
          "dtype": "complex128",          # only when it differs from the code's
          "parameter": true, "requires_grad": true, "device": "cuda:0",
          "scalar": true,                 # optional facts, absent when false
          "prng_impl": "threefry2x32",    # a typed JAX PRNG key, stored as its key data
          "tied_to": NAME                 # the same tensor as NAME (tied weights), stored again under this name
      }},
      "shared": [{"nbytes": N, "members": [{"name": NAME, "offset": BYTES,
                                            "strides": [ELEMENTS, ...]}]}]
    }

``header_checksum`` covers what the per-tensor checksums cannot: the whole
header, byte for byte (see :func:`seal`), so a damaged name, dtype, shape,
offset, metadata entry or record field is detected too. For that the header
MUST start with :data:`SEALED_PREFIX`: ``__metadata__`` first, the record first
inside it, ``header_checksum`` right after ``version``.

Every tensor in the header has exactly one entry in ``tensors`` and vice versa.
:func:`parse_record` validates all of it; anything malformed is a
:class:`FormatError`, a header checksum mismatch an :class:`IntegrityError`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import FormatError, IntegrityError

#: PRNG implementations a typed JAX key may name (``prng_impl``), as ``jax.random.key_impl`` calls them, and the
#: uint32 words of one key (the key data's last dimension).
PRNG_IMPLS = {"threefry2x32": 2, "rbg": 4, "unsafe_rbg": 4}
from .checksums import checksum
from .codes import STORED_AS
from .header import Header, TensorEntry, strict_json

__all__ = [
    "RECORD_KEY",
    "FORMAT_VERSION",
    "Member",
    "SharedGroup",
    "Record",
    "dump_record",
    "parse_record",
    "read_record",
    "header_digest",
    "seal",
    "extent",
    "SEALED_PREFIX",
    "logical_shape",
]

RECORD_KEY = "tensorfile"
FORMAT_VERSION = 1
_HEX = re.compile(r"[0-9a-f]{16}")
_DEVICE = re.compile(r"[a-z_]+(:[0-9]+)?")
_FLAGS = ("parameter", "requires_grad", "scalar", "variable", "trainable", "mx_np")


@dataclass(frozen=True)
class Member:
    """A tensor's place in a shared storage: byte offset and strides in elements."""

    name: str
    offset: int
    strides: tuple[int, ...]


@dataclass(frozen=True)
class SharedGroup:
    """Tensors that were views of one storage of ``nbytes`` bytes."""

    nbytes: int
    members: tuple[Member, ...]


@dataclass(frozen=True)
class Record:
    """The parsed, validated record."""

    version: int
    root: Any
    tensors: dict[str, dict[str, Any]]
    shared: tuple[SharedGroup, ...]


#: How a sealed header starts: the checksum's 16 hex digits follow at once.
SEALED_PREFIX = b'{"__metadata__":{"tensorfile":"{\\"version\\":1,\\"header_checksum\\":\\"'
_DIGITS = slice(len(SEALED_PREFIX), len(SEALED_PREFIX) + 16)
_PLACEHOLDER = "0" * 16


def header_digest(raw: bytes) -> str:
    """XXH3-64 (hex) of the header bytes with the checksum's 16 digits read as ``0``."""
    return checksum(raw[: _DIGITS.start] + _PLACEHOLDER.encode() + raw[_DIGITS.stop :])


def seal(raw: bytes) -> bytes:
    """Write the header checksum into a header built with :func:`dump_record`'s placeholder.

    ``raw`` is the N header bytes (no length prefix); returns them sealed.
    """
    if not raw.startswith(SEALED_PREFIX):  # pragma: no cover - a writer bug, not bad input
        raise RuntimeError("the header does not start with the record")
    return raw[: _DIGITS.start] + header_digest(raw).encode() + raw[_DIGITS.stop :]


def dump_record(root: Any, tensors: Mapping[str, Mapping[str, Any]], shared: Sequence[SharedGroup]) -> str:
    """Serialize a record to compact JSON, with a placeholder header checksum (see :func:`seal`)."""
    doc: dict[str, Any] = {"version": FORMAT_VERSION, "header_checksum": _PLACEHOLDER, "root": root, "tensors": tensors}
    if shared:
        doc["shared"] = [
            {"nbytes": g.nbytes, "members": [{"name": m.name, "offset": m.offset, "strides": list(m.strides)} for m in g.members]}
            for g in shared
        ]
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def extent(offset: int, shape: Sequence[int], strides: Sequence[int], item: int) -> tuple[int, int]:
    """Byte range ``[low, high)`` a view touches: its ``offset`` (bytes), ``strides`` (elements), item size."""
    low = offset + item * sum(min(0, (d - 1) * s) for d, s in zip(shape, strides))
    high = offset + item * (sum(max(0, (d - 1) * s) for d, s in zip(shape, strides)) + 1)
    return low, high


def _int(value: Any) -> bool:
    return type(value) is int


def logical_shape(entry: TensorEntry, info: Mapping[str, Any]) -> tuple[int, ...]:
    """The tensor's shape as saved (drops the trailing 2 of complex128)."""
    dtype = info.get("dtype")
    return entry.shape[:-1] if isinstance(dtype, str) and dtype in STORED_AS else entry.shape


def _check_tensor(path: str, name: str, info: dict[str, Any], entry: TensorEntry) -> None:
    where = f"{path}: tensor {name!r}"
    if not isinstance(info.get("checksum"), str) or not _HEX.fullmatch(info["checksum"]):
        raise FormatError(f"{where}: checksum must be 16 hex digits, found {info.get('checksum')!r}")
    if not isinstance(info.get("framework"), str):
        raise FormatError(f"{where}: framework must be a string, found {info.get('framework')!r}")
    for flag in _FLAGS:
        if flag in info and type(info[flag]) is not bool:
            raise FormatError(f"{where}: {flag} must be true or false, found {info[flag]!r}")
    if "device" in info and (not isinstance(info["device"], str) or not _DEVICE.fullmatch(info["device"])):
        raise FormatError(f"{where}: device must look like 'cuda:0', found {info['device']!r}")
    if "prng_impl" in info:
        words = PRNG_IMPLS.get(info["prng_impl"]) if isinstance(info["prng_impl"], str) else None
        if words is None or entry.code != "U32" or entry.shape[-1:] != (words,):
            raise FormatError(f"{where}: prng_impl must be one of {', '.join(PRNG_IMPLS)} over U32 data with a last "
                              f"dimension of its key words (2, 4, 4), found {info['prng_impl']!r} over {entry.code} "
                              f"{list(entry.shape)}")  # fmt: skip
    if "dtype" in info:
        stored = STORED_AS.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        if stored is None or entry.code != stored[0] or entry.shape[-1:] != (stored[1],):
            raise FormatError(f"{where}: dtype {info['dtype']!r} cannot be stored as {entry.code} {list(entry.shape)}")
    if info.get("scalar") and logical_shape(entry, info) != ():
        raise FormatError(f"{where}: scalar is true but the shape is {list(logical_shape(entry, info))}")


def parse_record(text: str, entries: Mapping[str, TensorEntry], raw: bytes, path: str) -> Record:
    """Parse and validate the record against the header's ``entries`` and raw bytes.

    Raises:
        FormatError: malformed JSON, unknown version, a tensor missing on either
            side, a bad field, or a shared view outside its storage.
        IntegrityError: the header checksum does not match (the header was damaged).
    """
    try:
        doc = strict_json(text)
    except FormatError as exc:
        raise FormatError(f"{path}: the tensorfile record: {exc}") from None
    except RecursionError:
        raise FormatError(f"{path}: the tensorfile record is nested too deeply") from None
    except ValueError as exc:
        raise FormatError(f"{path}: the tensorfile record is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not _int(doc.get("version")) or doc["version"] < 1 or "root" not in doc:
        raise FormatError(f"{path}: the tensorfile record must be an object with 'version' (>= 1) and 'root'")
    if doc["version"] > FORMAT_VERSION:
        raise FormatError(
            f"{path}: written by a newer tensorfile (format version {doc['version']}); "
            f"this one reads up to version {FORMAT_VERSION}: upgrade tensorfile"
        )
    stored_digest = doc.get("header_checksum")
    if not isinstance(stored_digest, str) or not _HEX.fullmatch(stored_digest):
        raise FormatError(f"{path}: the tensorfile record's header_checksum must be 16 hex digits")
    if not raw.startswith(SEALED_PREFIX) or raw[_DIGITS] != stored_digest.encode():
        raise IntegrityError(
            f"{path}: the header was rewritten (its record is not where tensorfile puts it), "
            "so its checksum cannot be checked"
        )
    found = header_digest(raw)
    if found != stored_digest:
        raise IntegrityError(
            f"{path}: the header is corrupt: header checksum (xxh3-64) expected {stored_digest}, found {found}"
        )
    tensors = doc.get("tensors")
    if not isinstance(tensors, dict) or not all(isinstance(v, dict) for v in tensors.values()):
        raise FormatError(f"{path}: the tensorfile record's 'tensors' must map names to objects")
    if set(tensors) != set(entries):
        only_record = sorted(set(tensors) - set(entries))
        only_header = sorted(set(entries) - set(tensors))
        raise FormatError(
            f"{path}: the tensorfile record does not match the header: "
            f"described but absent {only_record}, present but not described {only_header}"
        )
    for name, info in tensors.items():
        _check_tensor(path, name, info, entries[name])
    shared = _parse_shared(doc.get("shared", []), entries, tensors, path)
    _check_ties(path, tensors, entries, {m.name for g in shared for m in g.members})
    return Record(doc["version"], doc["root"], tensors, shared)


def read_record(header: Header, path: str) -> Record | None:
    """The validated record of a parsed header (:func:`parse_record`); None for a plain safetensors file.

    Raises:
        IntegrityError: no record under :data:`RECORD_KEY` but one under another key (the key was damaged),
            or as :func:`parse_record`.
        FormatError: as :func:`parse_record`.
    """
    metadata = header.metadata or {}
    text = metadata.get(RECORD_KEY)
    if text is None:
        for key, value in metadata.items():  # a record under another key: its key was damaged
            if value.startswith('{"version":') and '"header_checksum":"' in value:
                raise IntegrityError(f"{path}: the header is corrupt: tensorfile's record is stored under {key!r}")
        return None
    return parse_record(text, header.entries, header.raw, path)


def _check_ties(path: str, tensors: Mapping[str, Any], entries: Mapping[str, TensorEntry], shared: set[str]) -> None:
    """``tied_to``: the same tensor under a second name, stored again; the first is loaded for both."""
    for name, info in tensors.items():
        if "tied_to" not in info:
            continue
        first = info["tied_to"]
        where = f"{path}: tensor {name!r}"
        if not isinstance(first, str) or first not in tensors or first == name or "tied_to" in tensors[first]:
            raise FormatError(f"{where}: tied_to must name another tensor of the file that is not tied itself, "
                              f"found {short_text(first)}")  # fmt: skip
        same = {k: v for k, v in info.items() if k != "tied_to"} == tensors[first]
        if not same or entries[name].code != entries[first].code or entries[name].shape != entries[first].shape:
            raise FormatError(f"{where}: tied to {first!r} but its dtype, shape, checksum or facts differ")
        if name in shared or first in shared:
            raise FormatError(f"{where}: a tied tensor cannot also be in a shared group")


def short_text(value: Any, limit: int = 200) -> str:
    """``repr(value)`` of at most ``limit`` characters (a message never quotes more of a file's value)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_shared(raw: Any, entries: Mapping[str, TensorEntry], tensors: Mapping[str, Any], path: str) -> tuple[SharedGroup, ...]:
    if not isinstance(raw, list):
        raise FormatError(f"{path}: the tensorfile record's 'shared' must be a list")
    groups = []
    seen: set[str] = set()
    for g in raw:
        if (
            not isinstance(g, dict)
            or not _int(g.get("nbytes"))
            or g["nbytes"] <= 0
            or not isinstance(g.get("members"), list)
            or len(g["members"]) < 2
        ):
            raise FormatError(f"{path}: invalid shared group {short_text(g)}: needs nbytes > 0 and two or more members")
        members = []
        for m in g["members"]:
            name = m.get("name") if isinstance(m, dict) else None
            if not isinstance(name, str) or name not in entries or name in seen:
                raise FormatError(f"{path}: shared group names {name!r}, which is not a tensor or is already shared")
            seen.add(name)
            entry = entries[name]
            shape = logical_shape(entry, tensors[name])
            offset, strides = m.get("offset"), m.get("strides")
            if not _int(offset) or not isinstance(strides, list) or len(strides) != len(shape) or not all(map(_int, strides)):
                raise FormatError(f"{path}: tensor {name!r}: invalid shared view {short_text(m)}")
            item = entry.itemsize * (2 if tensors[name].get("dtype") in STORED_AS else 1)
            low, high = extent(offset, shape, strides, item)
            if 0 in shape or offset % item or low < 0 or high > g["nbytes"]:
                raise FormatError(f"{path}: tensor {name!r}: shared view lies outside its storage of {g['nbytes']} bytes")
            members.append(Member(name, offset, tuple(strides)))
        names = [m.name for m in members]
        if len({tensors[n]["framework"] for n in names}) > 1 or any(tensors[n].get("scalar") for n in names):
            raise FormatError(f"{path}: shared group {names} mixes frameworks or holds a scalar")
        groups.append(SharedGroup(g["nbytes"], tuple(members)))
    return tuple(groups)
