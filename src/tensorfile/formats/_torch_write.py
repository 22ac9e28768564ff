"""Write ``torch.save`` zip files without torch, loadable by ``torch.load(weights_only=True)``.

Reference: pytorch/pytorch ``torch/serialization.py`` (``_save``: the archive and its
records), ``torch/_tensor.py`` (``_reduce_ex_internal``) and ``torch/_utils.py``
(``_rebuild_tensor_v2`` / ``_v3``, ``_rebuild_parameter``). The archive holds,
under one folder::

    data.pkl              the pickled structure (protocol 2), storages as persistent ids
    .format_version       "1"
    .storage_alignment    "64"
    byteorder             "little"
    data/0, data/1, ...   each storage's raw bytes, stored (not compressed), 64-byte aligned
    version               "3\\n"

A persistent id is ``("storage", torch.<Kind>Storage, key, "cpu", numel)``. dtypes
that torch stores through typed storages use ``_rebuild_tensor_v2``; the others
(uint16/32/64, float8) use ``UntypedStorage`` and ``_rebuild_tensor_v3`` with the
dtype, as torch itself does. Tensors that shared a storage (same dtype) share one
again; every storage is recorded on ``"cpu"``.
"""

from __future__ import annotations

import struct
import zipfile
from typing import BinaryIO, Callable, Iterable, Iterator

import numpy as np

from ..errors import UnsupportedTypeError
from ..format.writer import tensor_chunks
from ..frameworks.base import fill_storage
from ..safepickle.write import Call, Global, PersistentId, PickleWriter
from ..tree import Flattened, Leaf, shared_groups, unflatten

__all__ = ["write_torch", "ALIGNMENT"]

#: Byte alignment of each record's data in the archive, as torch writes it.
ALIGNMENT = 64
_TYPED = {
    "float64": "DoubleStorage", "float32": "FloatStorage", "float16": "HalfStorage", "bfloat16": "BFloat16Storage",
    "int64": "LongStorage", "int32": "IntStorage", "int16": "ShortStorage", "int8": "CharStorage",
    "uint8": "ByteStorage", "bool": "BoolStorage", "complex64": "ComplexFloatStorage",
    "complex128": "ComplexDoubleStorage",
}  # fmt: skip
_UNTYPED = {"uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
            "float8_e8m0fnu"}  # fmt: skip
_ORDERED_DICT = Global("collections", "OrderedDict")
_V2 = Global("torch._utils", "_rebuild_tensor_v2")
_V3 = Global("torch._utils", "_rebuild_tensor_v3")
_PARAMETER = Global("torch._utils", "_rebuild_parameter")


def _tensor(leaf: Leaf, key: str, storage_bytes: int, offset: int, strides: tuple[int, ...]) -> Call:
    """The pickled call that rebuilds ``leaf`` from storage ``key`` (offset and strides in elements)."""
    dtype, item = leaf.array.dtype.name, leaf.array.dtype.itemsize
    hooks = Call(_ORDERED_DICT, ())
    parameter = bool(leaf.record.get("parameter"))
    requires_grad = bool(leaf.record.get("requires_grad", False))
    shape = tuple(int(d) for d in leaf.array.shape)
    if dtype in _TYPED:
        pid = PersistentId(("storage", Global("torch", _TYPED[dtype]), key, "cpu", storage_bytes // item))
        call = Call(_V2, (pid, offset, shape, strides, requires_grad and not parameter, hooks))
    elif dtype in _UNTYPED:
        pid = PersistentId(("storage", Global("torch.storage", "UntypedStorage"), key, "cpu", storage_bytes))
        call = Call(_V3, (pid, offset, shape, strides, requires_grad and not parameter, hooks, Global("torch", dtype)))
    else:  # pragma: no cover - flatten only yields the dtypes above
        raise UnsupportedTypeError(f"tensor {leaf.name!r}: torch has no dtype {dtype}")
    if parameter:
        return Call(_PARAMETER, (call, requires_grad, Call(_ORDERED_DICT, ())))
    return call


def _c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= max(d, 1)
    return tuple(reversed(strides))


def _storages(flat: Flattened) -> tuple[dict[str, Call], list[np.ndarray]]:
    """Each leaf's rebuild call and the storages' data, in key order ("0", "1", ...)."""
    by_name = {leaf.name: leaf for leaf in flat.leaves}
    calls: dict[str, Call] = {}
    storages: list[np.ndarray] = []
    for group in shared_groups(flat.leaves):
        members = [by_name[m.name] for m in group.members]
        item = members[0].array.dtype.itemsize
        if any(m.array.dtype != members[0].array.dtype for m in members) or any(
            s < 0 for m in group.members for s in m.strides
        ) or any(m.offset % item for m in group.members):
            continue  # torch cannot express these views: each is written on its own below
        nbytes = -(-group.nbytes // item) * item
        little = [m.array.astype(m.array.dtype.newbyteorder("<")) if m.array.dtype.byteorder == ">" else m.array
                  for m in members]  # fmt: skip
        buffer, _ = fill_storage(nbytes, [(a, m.offset, m.strides, {}) for a, m in zip(little, group.members)])
        key = str(len(storages))
        storages.append(buffer)
        for leaf, m in zip(members, group.members):
            calls[leaf.name] = _tensor(leaf, key, nbytes, m.offset // item, tuple(m.strides))
    for leaf in flat.leaves:
        if leaf.name not in calls:
            key = str(len(storages))
            storages.append(leaf.array)
            calls[leaf.name] = _tensor(leaf, key, leaf.array.nbytes, 0, _c_strides(tuple(leaf.array.shape)))
    return calls, storages


class _Archive:
    """Records of one zip archive, each stored with its data aligned to :data:`ALIGNMENT` bytes."""

    def __init__(self, f: BinaryIO, folder: str) -> None:
        self._zip = zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True)
        self._folder = folder

    def write(self, name: str, pieces: Iterable[bytes | memoryview], nbytes: int) -> None:
        info = zipfile.ZipInfo(f"{self._folder}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
        info.file_size = nbytes
        zip64 = nbytes * 1.05 > zipfile.ZIP64_LIMIT  # zipfile's own rule: a zip64 extra of 20 bytes follows ours
        start = self._zip.fp.tell() + 30 + len(info.filename.encode("utf-8")) + 4 + (20 if zip64 else 0)  # type: ignore[union-attr]
        pad = -start % ALIGNMENT
        info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad  # a padding field, as torch's writer adds
        with self._zip.open(info, "w", force_zip64=zip64) as out:
            if self._zip.fp.tell() % ALIGNMENT:  # type: ignore[union-attr]  # pragma: no cover - guards the arithmetic
                raise RuntimeError(f"record {name!r} is not {ALIGNMENT}-byte aligned")
            for piece in pieces:
                out.write(piece)

    def close(self) -> None:
        self._zip.close()


def write_torch(f: BinaryIO, flat: Flattened, progress: Callable[[int], None] | None = None) -> None:
    """Write ``flat`` (see :func:`tensorfile.tree.flatten`) to ``f`` as a ``torch.save`` zip archive.

    The structure (dict, OrderedDict, list, tuple, None, bool, int, float, str),
    Parameters and ``requires_grad`` are kept; tensors go to the CPU.

    Args:
        f: a seekable binary file open for writing, at position 0.
        flat: the flattened value.
        progress: called with the number of data bytes written after each chunk.
    """
    calls, storages = _storages(flat)
    try:
        pickled = PickleWriter().dumps(unflatten(flat.root, lambda name: calls[name]))
    except (ValueError, TypeError) as exc:
        raise UnsupportedTypeError(f"obj: a torch.save file cannot hold {exc}") from None
    archive = _Archive(f, "archive")
    for name, text in (("data.pkl", pickled), (".format_version", b"1"), (".storage_alignment", b"%d" % ALIGNMENT),
                       ("byteorder", b"little")):  # fmt: skip
        archive.write(name, [text], len(text))
    for key, data in enumerate(storages):
        archive.write(f"data/{key}", _counted(tensor_chunks(data), progress), data.nbytes)
    archive.write("version", [b"3\n"], 2)
    archive.close()


def _counted(pieces: Iterator[memoryview], progress: Callable[[int], None] | None) -> Iterator[memoryview]:
    for piece in pieces:
        yield piece
        if progress is not None:
            progress(len(piece))
