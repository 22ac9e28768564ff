"""PyTorch ``torch.save`` files before torch 1.6 (``_use_new_zipfile_serialization=False``), read without torch.

Reference: pytorch/pytorch ``torch/serialization.py`` (``_legacy_save`` / ``_legacy_load``). The
stream is five pickles in a row, then the raw storages::

    magic number (an int), protocol version, sys_info, the object (storages as persistent ids),
    the list of storage keys; then per key: i64 element count, the elements (little-endian)

The first three and the key list are plain values, read with an empty table; only the
object's pickle gets the torch table (:func:`tensorfile.formats.torch._table`). Every
storage's length is checked against the file and charged to the budget before it is read.
A legacy stream starts like a pickle of an int, which a safetensors length field can also
look like: it sniffs at 0.5, below a safetensors header that parses.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from ..errors import FormatError, UnsupportedTypeError
from ..format.memory import empty_bytes
from ..limits import Budget
from ..safepickle.machine import load_pickle
from .base import Format, Probe
from .torch import _materialize, _Storage, _storage_id, _storage_kind, _table, read_torch

__all__ = ["LEGACY_MAGIC", "is_torch_legacy", "read_legacy", "TORCH_LEGACY"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


_MAGIC_BYTES = b"\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")  # LONG1 of 10 bytes: the magic number


def _first_opcode(prefix: bytes) -> int:
    """Where the first opcode after ``PROTO n`` (and a protocol 4+ ``FRAME``) starts; -1 when not a pickle."""
    if len(prefix) < 3 or prefix[0] != 0x80 or not 2 <= prefix[1] <= 5:
        return -1
    return 11 if prefix[2] == 0x95 else 2


def is_torch_legacy(prefix: bytes) -> bool:
    """True when ``prefix`` starts like a pickle of the legacy torch.save magic number (any protocol 2 to 5)."""
    start = _first_opcode(prefix)
    return start >= 0 and prefix[start : start + 1] == b"\x8a"


def _sniff(probe: Probe) -> float:
    """0.9 for the whole magic number; 0.5 for a pickle starting with a LONG1 (a safetensors length can look so)."""
    start = _first_opcode(probe.prefix)
    if start < 0 or probe.prefix[start : start + 1] != b"\x8a":
        return 0.0
    return 0.9 if probe.prefix[start : start + len(_MAGIC_BYTES)] == _MAGIC_BYTES else 0.5


def read_legacy(path: str, f: Any, budget: Budget) -> Any:
    """Read a legacy stream from the open file ``f`` (at its start); see the module's docstring.

    Raises:
        UnsafeFileError, UnsupportedTypeError, FormatError: as :func:`tensorfile.formats.torch.read_torch`.
    """
    what = f"{path}: legacy torch.save stream"
    plain: dict[tuple[str, str], Any] = {}  # the magic number, protocol version and sys_info are plain values
    magic = load_pickle(f, plain, what=what, budget=budget)
    if type(magic) is not int or magic != LEGACY_MAGIC:
        raise FormatError(f"{what}: wrong magic number")
    load_pickle(f, plain, what=what, budget=budget)  # protocol version
    load_pickle(f, plain, what=what, budget=budget)  # sys_info
    table = _table(path, budget)
    storages: dict[str, _Storage] = {}

    def persistent_load(pid: Any) -> Any:
        kind, key, numel = _storage_id(pid, what)
        if key not in storages:
            storages[key] = _Storage(key, _storage_kind(kind, path), numel)
        if len(pid) > 5 and pid[5] is not None:  # a view of a storage (very old files)
            raise UnsupportedTypeError(f"{what}: storage views are not supported")
        return storages[key]

    value = load_pickle(f, table, persistent_load=persistent_load, what=what, budget=budget)
    keys = load_pickle(f, plain, what=what, budget=budget)
    if type(keys) is not list or not all(type(k) in (str, int) for k in keys):
        raise FormatError(f"{what}: the storage key list is missing")
    size = os.fstat(f.fileno()).st_size
    for key in keys:
        storage = storages.get(str(key))
        header = f.read(8)
        if storage is None or len(header) != 8:
            raise FormatError(f"{what}: storage {key!r} is missing or truncated")
        (numel,) = struct.unpack("<q", header)
        nbytes = numel * storage.dtype.itemsize
        if numel < 0 or f.tell() + nbytes > size:
            raise FormatError(f"{what}: storage {key!r} claims {numel} elements, more than the file holds")
        budget.charge(nbytes, f"storage {key!r}")  # and nbytes was checked against the file above
        data = empty_bytes(nbytes)
        view, done = data.data, 0
        while done < nbytes:
            got = f.readinto(view[done:])
            if not got:
                raise FormatError(f"{what}: storage {key!r} is truncated")
            done += got
        storage.data = data.view(storage.dtype)
    return _materialize(value, path, budget)



#: ``torch.save`` before torch 1.6 (``_use_new_zipfile_serialization=False``): pickles, then raw storages.
#: Its first bytes are a pickle of an int; a valid safetensors file can start the same way, so it sniffs lower.
TORCH_LEGACY = Format(
    "torch-legacy", "PyTorch torch.save (legacy stream)", "torch", (),
    sniff=_sniff, read=lambda path, budget: read_torch(path, budget),
)  # fmt: skip
