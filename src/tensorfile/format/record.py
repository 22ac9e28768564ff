"""tensorfile's own entry in ``__metadata__``: structure, checksums, sharing.

A tensorfile file stores one ``__metadata__`` entry under the key
:data:`RECORD_KEY` whose value is a JSON document (a string, as safetensors
requires)::

    {
      "version": 1,
      "root": NODE,                       # the structure, see tensorfile.tree
      "tensors": {NAME: {
          "checksum": "16 hex digits",    # XXH3-64 of the stored bytes
          "framework": "numpy" | "torch" | ...,
          "dtype": "complex128",          # only when it differs from the code's
          "parameter": true, "requires_grad": true, "device": "cuda:0",
          "scalar": true                  # optional facts, absent when false
      }},
      "shared": [{"nbytes": N, "members": [{"name": NAME, "offset": BYTES,
                                            "strides": [ELEMENTS, ...]}]}]
    }

Every tensor in the header has exactly one entry in ``tensors`` and vice versa.
:func:`parse_record` validates all of it; anything off is a :class:`FormatError`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import FormatError
from .dtypes import STORED_AS
from .header import TensorEntry

__all__ = ["RECORD_KEY", "FORMAT_VERSION", "Member", "SharedGroup", "Record", "dump_record", "parse_record"]

RECORD_KEY = "tensorfile"
FORMAT_VERSION = 1
_HEX = re.compile(r"[0-9a-f]{16}")


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


def dump_record(root: Any, tensors: Mapping[str, Mapping[str, Any]], shared: list[SharedGroup]) -> str:
    """Serialize a record to compact JSON (no NaN: floats are pre-encoded by the tree)."""
    doc: dict[str, Any] = {"version": FORMAT_VERSION, "root": root, "tensors": tensors}
    if shared:
        doc["shared"] = [
            {"nbytes": g.nbytes, "members": [{"name": m.name, "offset": m.offset, "strides": list(m.strides)} for m in g.members]}
            for g in shared
        ]
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _int(value: Any) -> bool:
    return type(value) is int


def logical_shape(entry: TensorEntry, info: Mapping[str, Any]) -> tuple[int, ...]:
    """The tensor's shape as saved (drops the trailing 2 of complex128)."""
    return entry.shape[:-1] if info.get("dtype") in STORED_AS else entry.shape


def parse_record(text: str, entries: Mapping[str, TensorEntry], path: str) -> Record:
    """Parse and validate the record against the header's ``entries``.

    Raises:
        FormatError: malformed JSON, unknown version, a tensor missing on either
            side, a bad checksum string, or a shared view outside its storage.
    """
    try:
        doc = json.loads(text)
    except RecursionError:
        raise FormatError(f"{path}: the tensorfile record is nested too deeply") from None
    except ValueError as exc:
        raise FormatError(f"{path}: the tensorfile record is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not _int(doc.get("version")) or "root" not in doc:
        raise FormatError(f"{path}: the tensorfile record must be an object with 'version' and 'root'")
    if doc["version"] > FORMAT_VERSION:
        raise FormatError(
            f"{path}: written by a newer tensorfile (format version {doc['version']}); "
            f"this one reads up to version {FORMAT_VERSION}: upgrade tensorfile"
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
        if not isinstance(info.get("checksum"), str) or not _HEX.fullmatch(info["checksum"]):
            raise FormatError(f"{path}: tensor {name!r}: checksum must be 16 hex digits, found {info.get('checksum')!r}")
        if not isinstance(info.get("framework"), str):
            raise FormatError(f"{path}: tensor {name!r}: framework must be a string")
        dtype = info.get("dtype")
        if dtype is not None:
            stored = STORED_AS.get(dtype)
            entry = entries[name]
            if stored is None or entry.code != stored[0] or entry.shape[-1:] != (stored[1],):
                raise FormatError(
                    f"{path}: tensor {name!r}: dtype {dtype!r} cannot be stored as {entry.code} {list(entry.shape)}"
                )
    return Record(doc["version"], doc["root"], tensors, _parse_shared(doc.get("shared", []), entries, tensors, path))


def _parse_shared(raw: Any, entries: Mapping[str, TensorEntry], tensors: Mapping[str, Any], path: str) -> tuple[SharedGroup, ...]:
    if not isinstance(raw, list):
        raise FormatError(f"{path}: the tensorfile record's 'shared' must be a list")
    groups = []
    seen: set[str] = set()
    for g in raw:
        if not isinstance(g, dict) or not _int(g.get("nbytes")) or g["nbytes"] < 0 or not isinstance(g.get("members"), list):
            raise FormatError(f"{path}: invalid shared group {g!r}")
        members = []
        for m in g["members"]:
            name = m.get("name") if isinstance(m, dict) else None
            if name not in entries or name in seen:
                raise FormatError(f"{path}: shared group names {name!r}, which is not a tensor or is already shared")
            seen.add(name)
            entry = entries[name]
            shape = logical_shape(entry, tensors[name])
            offset, strides = m.get("offset"), m.get("strides")
            if not _int(offset) or not isinstance(strides, list) or len(strides) != len(shape) or not all(map(_int, strides)):
                raise FormatError(f"{path}: tensor {name!r}: invalid shared view {m!r}")
            item = entry.dtype.itemsize * (2 if tensors[name].get("dtype") in STORED_AS else 1)
            low = offset + item * sum(min(0, (d - 1) * s) for d, s in zip(shape, strides))
            high = offset + item * (sum(max(0, (d - 1) * s) for d, s in zip(shape, strides)) + 1)
            if 0 in shape or low < 0 or high > g["nbytes"]:
                raise FormatError(f"{path}: tensor {name!r}: shared view lies outside its storage of {g['nbytes']} bytes")
            members.append(Member(name, offset, tuple(strides)))
        groups.append(SharedGroup(g["nbytes"], tuple(members)))
    return tuple(groups)
