"""``tensorfile.open`` of a ``torch.save`` zip: data.pkl read now, each tensor's bytes when it is asked for.

The archive is checked as :func:`tensorfile.formats.torch.read_torch` checks it
(:func:`._zip.check_zip`, TorchScript, byte order) and data.pkl runs through the
same pickle machine with the same table; each storage is described by its zip
member (size, where its data starts) and never read here. A tensor's
:class:`._index.Entry` reads only the bytes of its storage the tensor reaches: for
a stored member (what ``torch.save`` writes) straight from the file at its offset;
for a member a re-zipping tool compressed, by inflating the member in pieces up to
its end (its CRC-32 is checked; only the range is kept). Tensors read so share no
memory, where ``load`` returns views of one storage.
"""

from __future__ import annotations

import zipfile
from typing import Any

import numpy as np

from ..errors import FormatError
from ..format.memory import empty_bytes
from ..limits import Budget
from ..safepickle.numpy_objects import resolve
from ._index import Entry, Index
from ._zip import read_member_range
from .torch import _archive, _Layout, _layout, _Lazy, _parameter, _read_into, _strided, _unpickle, torch_zip

__all__ = ["index_torch"]


def index_torch(path: str, budget: Budget) -> Index:
    """The tensors of the ``torch.save`` zip ``path``, described by data.pkl and the zip's members.

    Raises:
        UnsafeFileError, UnsupportedTypeError, FormatError, LimitError: as :func:`.torch.read_torch`
            raises them for the archive and its pickle.
    """
    f = open(path, "rb")
    zf = None
    try:
        zf, root = torch_zip(path, f)
        offsets, pickled = _archive(path, zf, root, budget)
        value = _unpickle(path, zf, root, pickled, budget, None)
        source = _Storages(path, f, zf, offsets)

        def convert(record: Any) -> Any:
            return source.entry(record) if isinstance(record, _Lazy) else NotImplemented

        value = resolve(value, path, budget.limits.max_depth, convert)
    except RecursionError:
        _close(zf, f)
        raise FormatError(f"{path}: nested too deeply") from None
    except BaseException:
        _close(zf, f)
        raise
    return Index(value, lambda: _close(zf, f))


def _close(zf: zipfile.ZipFile | None, f: Any) -> None:
    if zf is not None:
        zf.close()
    f.close()


class _Storages:
    """Reads parts of the storages of one open archive."""

    def __init__(self, path: str, f: Any, zf: zipfile.ZipFile, offsets: dict[str, int]) -> None:
        self.path, self.f, self.zf, self.offsets = path, f, zf, offsets

    def entry(self, lazy: _Lazy) -> Entry:
        layout = _layout(lazy, self.path, lazy.storage.nbytes)  # inside its storage: checked now
        return Entry(layout.dtype, layout.shape, lambda budget, what: self.tensor(lazy, layout, budget, what))

    def tensor(self, lazy: _Lazy, layout: _Layout, budget: Budget, what: str) -> np.ndarray:
        """The tensor, from a new buffer of the storage bytes it reaches (charged first, with the tensor's own bytes,
        as the full reader charges the storage and the tensor)."""
        info = lazy.storage.member
        if info is None:  # pragma: no cover - every storage of an index has its member
            raise FormatError(f"{self.path}: {what}: storage {lazy.storage.key!r} has no member")
        span = layout.end - layout.begin
        budget.charge(span, f"{what}: {span} bytes of storage {lazy.storage.key!r}")
        budget.charge(layout.nbytes, f"{what}: {layout.label()}")
        if not layout.nbytes:
            return _parameter(np.empty(layout.shape, layout.dtype), lazy)
        raw = empty_bytes(span)
        where = f"{self.path}: {what} (member {info.filename!r})"
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size == info.file_size:
            _read_into(self.path, self.f.fileno(), info, memoryview(raw), self.offsets[info.filename] + layout.begin)
        else:
            read_member_range(self.zf, info, layout.begin, memoryview(raw), where)
        return _parameter(_strided(raw, layout), lazy)
