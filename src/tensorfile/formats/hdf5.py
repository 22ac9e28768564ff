"""Keras weight files through ``h5py``: Keras 3 ``.weights.h5`` and ``.keras``, Keras 2 ``.h5``.

Reference: keras-team/keras ``keras/src/saving/saving_lib.py`` (``H5IOStore``: one
group per layer, one dataset per variable, ``attrs["dtype"] == "bfloat16"`` on
bfloat16 variables). Every numeric dataset becomes one entry of a flat dict keyed
by its full HDF5 path exactly as in the file (for a ``.keras`` archive, the paths
inside its ``model.weights.h5``), in HDF5's name order; datasets Keras marked
bfloat16 come back as bfloat16. Strings, references, compound, opaque and null
datasets are metadata, not weights: they are counted and skipped.

What a file may not make this reader do (each refused with :class:`UnsafeFileError`
naming the file and the dataset or link, before any of its data is read):

- read another file. HDF5 can put a dataset's bytes in other files: *external
  storage* (``H5Pset_external``, "External Storage Properties" in the HDF5 user's
  guide), *virtual datasets* (the HDF5 "Virtual Dataset (VDS)" RFC: a dataset
  mapped from datasets of other files) and *external links* (``H5Lcreate_external``).
  All three are refused whatever the ``HDF5_EXTFILE_PREFIX``, ``HDF5_VDS_PREFIX``
  and ``HDF5_EXT_PREFIX`` environment variables say, since no other file is
  ever opened. Soft links are refused too: links are walked here, one name at
  a time and never through a path (so a link named ``a/b`` is malformed, not a
  path), and an object reached twice by hard links (an alias, or a group linked
  into itself) is read once; nesting is bounded by ``Limits.max_depth``.
- load code: a filter other than HDF5's built-in ones and h5py's LZF would make
  libhdf5 search its plugin path for a shared library.
- allocate without bound. Each dataset's full size (shape x item size, whatever
  is stored: a never-written dataset reads as its fill value) is charged to the
  :class:`~tensorfile.limits.Budget` before it is allocated, and so is the
  largest chunk libhdf5 will hold while decompressing (a one-element dataset may
  declare a chunk of 2**28 elements), and libhdf5's own bookkeeping of about 4 KiB
  per chunk (a dataset of 2**24 one-byte chunks, never written, is a 1.4 KB file);
  a compressed chunk bomb is thus refused by the charge for its inflated size.
  Each dataset is read with one copy, straight into its output array (libhdf5
  converts byte order on the way).

Every failure caused by the file is a :class:`~tensorfile.errors.TensorFileError`.

:func:`index_h5` and :func:`index_keras` (``tensorfile.open``) walk the file and check every
link and dataset as above when it is opened, and read a dataset (charged as above) when it
is asked for; the file stays open until the :class:`~tensorfile.LazyFile` is closed.
"""

from __future__ import annotations

import contextlib
import io
import os
import weakref
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FormatError, LimitError, TensorFileError, UnsafeFileError
from ..format.dtypes import dtype_from_name
from ..format.memory import empty_array
from ..limits import DEFAULT_LIMITS, Budget
from ._index import Entry, Index
from ._zip import data_start, open_zip, zip_errors
from .base import Format, Probe

__all__ = ["HDF5_MAGIC", "KERAS_WEIGHTS", "CHUNK_OVERHEAD", "read_h5", "read_keras_archive", "index_h5", "index_keras"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: The member of a ``.keras`` archive that holds the weights.
KERAS_WEIGHTS = "model.weights.h5"
#: Bytes libhdf5 (1.14) allocates per chunk a read touches, written or not (measured: about 3.9 KiB), and
#: about 5 microseconds: charged per chunk, it bounds the time a file of tiny chunks can take too.
CHUNK_OVERHEAD = 4096
#: What h5py raises for a malformed file (and what this module turns into FormatError).
_H5PY_ERRORS = (OSError, KeyError, TypeError, ValueError, RuntimeError, AttributeError, OverflowError, IndexError)


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is a dependency
        raise ImportError(f"reading HDF5 (Keras) files needs h5py: pip install h5py ({exc})") from exc
    return h5py


@contextlib.contextmanager
def _h5_errors(where: str) -> Iterator[None]:
    """Turn h5py's errors into FormatError naming ``where`` (ours pass through)."""
    try:
        yield
    except TensorFileError:
        raise
    except _H5PY_ERRORS as exc:
        raise FormatError(f"{where}: cannot be read as HDF5 ({type(exc).__name__}: {exc})") from None


def read_h5(path: str | os.PathLike[str], budget: Budget | None = None) -> dict[str, np.ndarray]:
    """Every numeric dataset of the HDF5 file ``path``, keyed by its full path.

    Args:
        path: the file.
        budget: what the file may make us allocate; ``None``: ``DEFAULT_LIMITS`` for its size.

    Raises:
        UnsafeFileError: external storage, a virtual dataset, an external or soft link, a filter plugin.
        LimitError: more bytes, tensors or nesting than the budget allows.
        FormatError: not valid HDF5.
    """
    h5py, path = _h5py(), os.fspath(path)
    if budget is None:
        budget = DEFAULT_LIMITS.budget(path, os.path.getsize(path))
    with _h5_errors(path):
        handle = h5py.File(path, "r", locking=False)  # sec2 driver: this one file, no lock files
    with handle:
        return _Reader(handle, path, budget, "").read()


def read_keras_archive(
    path: str | os.PathLike[str], zf: zipfile.ZipFile, budget: Budget | None = None
) -> dict[str, np.ndarray]:
    """The weights inside the ``.keras`` archive ``path`` (its ``model.weights.h5``), as :func:`read_h5` reads them.

    The member is read into memory (charged to the budget, and checked against
    ``Limits.max_expansion`` if compressed) and opened from there.

    Raises:
        the errors of :func:`read_h5`, naming the archive and the member.
    """
    h5py, path = _h5py(), os.fspath(path)
    what = f"{path}: {KERAS_WEIGHTS}"
    if budget is None:
        budget = DEFAULT_LIMITS.budget(path, os.path.getsize(path))
    with zip_errors(what):
        if KERAS_WEIGHTS not in zf.namelist():
            raise FormatError(f"{path}: a .keras archive without {KERAS_WEIGHTS}")
        info = zf.getinfo(KERAS_WEIGHTS)
        if info.compress_type != zipfile.ZIP_STORED:
            budget.check_expansion(info.compress_size, info.file_size, KERAS_WEIGHTS)
        budget.charge(info.file_size, KERAS_WEIGHTS)
        data = zf.read(info)  # never more than info.file_size bytes
    with _h5_errors(what):
        handle = h5py.File(io.BytesIO(data), "r", locking=False)
    with handle:
        return _Reader(handle, what, budget, f"{KERAS_WEIGHTS}: ").read()


def index_h5(path: str, budget: Budget) -> Index:
    """The datasets of the HDF5 file ``path``, checked as :func:`read_h5` checks them (links, external storage,
    virtual datasets, filters) and described; each read when asked for (:mod:`._index`), charged then.

    Raises:
        as :func:`read_h5`, for the file's structure.
    """
    h5py = _h5py()
    with _h5_errors(path):
        handle = h5py.File(path, "r", locking=False)
    try:
        value = _Reader(handle, path, budget, "", lazy=True).read()
    except BaseException:
        handle.close()
        raise
    return Index(value, handle.close)


def index_keras(path: str, budget: Budget) -> Index:
    """The datasets of a ``.keras`` archive's ``model.weights.h5``, as :func:`index_h5` describes them.

    A stored member (what Keras writes) is opened where it lies in the archive, through a window onto the
    file; a compressed one cannot be read in place and is inflated into memory whole, as
    :func:`read_keras_archive` reads it (charged, and checked against ``Limits.max_expansion``). A stored
    member's CRC-32 is not checked on this path (``tensorfile verify`` checks it).

    Raises:
        as :func:`read_keras_archive`.
    """
    zf = open_zip(path, budget)
    handle = None
    try:
        what = f"{path}: {KERAS_WEIGHTS}"
        with zip_errors(what):
            if KERAS_WEIGHTS not in zf.namelist():
                raise FormatError(f"{path}: a .keras archive without {KERAS_WEIGHTS}")
            info = zf.getinfo(KERAS_WEIGHTS)
        if info.compress_type != zipfile.ZIP_STORED:
            value = read_keras_archive(path, zf, budget)
            zf.close()
            return Index(value)
        start = data_start(zf, info, what)
        window = _Window(zf.fp.fileno(), start, info.file_size)  # type: ignore[union-attr]
        with _h5_errors(what):
            handle = _h5py().File(window, "r", locking=False)
        value = _Reader(handle, what, budget, f"{KERAS_WEIGHTS}: ", lazy=True).read()
    except BaseException:
        if handle is not None:
            handle.close()
        zf.close()
        raise

    def close() -> None:
        handle.close()
        zf.close()

    return Index(value, close)


class _Window(io.RawIOBase):
    """Bytes ``start`` to ``start + size`` of an open file, as a read-only file of their own (``pread``: the
    file's position is never moved)."""

    def __init__(self, fd: int, start: int, size: int) -> None:
        super().__init__()
        self.fd, self.start, self.size, self.pos = fd, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(f"seek to {base + offset}, before the start")
        self.pos = base + offset
        return self.pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self.size - self.pos))
        got = os.preadv(self.fd, [view[:n]], self.start + self.pos) if n else 0
        self.pos += got
        return got


class _Reader:
    """One walk over one open file: links by name, each object once, datasets read into charged arrays."""

    def __init__(self, handle: Any, where: str, budget: Budget, inside: str, lazy: bool = False) -> None:
        # where: the file (and member) named in our errors; inside: the member, named in the budget's
        self.h5py, self.handle, self.where, self.budget, self.inside = _h5py(), handle, where, budget, inside
        self.lazy = lazy  # datasets described (Entry), read when asked for
        # the largest chunk charged so far to each budget (libhdf5 holds one chunk buffer at a time)
        self.chunk_bytes: weakref.WeakKeyDictionary[Budget, int] = weakref.WeakKeyDictionary()
        h5z = self.h5py.h5z
        self.filters = {h5z.FILTER_DEFLATE, h5z.FILTER_SHUFFLE, h5z.FILTER_FLETCHER32, h5z.FILTER_SZIP,
                        h5z.FILTER_NBIT, h5z.FILTER_SCALEOFFSET, h5z.FILTER_LZF}

    def read(self) -> dict[str, Any]:
        h5o = self.h5py.h5o
        out: dict[str, Any] = {}
        with _h5_errors(self.where):
            root = self.handle.id
            seen = {h5o.get_info(root).addr}
        stack = [(root, "", iter(self._names(root, "/")))]
        ancestors = [next(iter(seen))]  # the groups on the current path, by address
        while stack:
            group, prefix, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                ancestors.pop()
                continue
            key = prefix + name.decode("utf-8", "surrogateescape")
            obj = self._open(group, name, key)
            with _h5_errors(f"{self.where}: '{key}'"):
                info = h5o.get_info(obj)
            if info.addr in ancestors:
                raise UnsafeFileError(f"{self.where}: '{key}' is a hard link back to the group that holds it: a link "
                                      "cycle, which no Keras file has")
            if info.addr in seen:
                continue  # reached again by another hard link (an alias): read once
            seen.add(info.addr)
            kind = info.type
            if kind == h5o.TYPE_GROUP:
                if len(stack) >= self.budget.limits.max_depth:
                    raise LimitError(f"{self.where}: '{key}': groups nested deeper than {self.budget.limits.max_depth} "
                                     "(Limits.max_depth)")
                stack.append((obj, key + "/", iter(self._names(obj, key))))
                ancestors.append(info.addr)
            elif kind == h5o.TYPE_DATASET:
                array = self._dataset(obj, key)
                if array is not None:
                    out[key] = array
        return out

    def _names(self, group: Any, key: str) -> list[bytes]:
        names: list[bytes] = []
        with _h5_errors(f"{self.where}: group '{key}'"):
            group.links.iterate(names.append, idx_type=self.h5py.h5.INDEX_NAME, order=self.h5py.h5.ITER_INC)
        return names

    def _open(self, group: Any, name: bytes, key: str) -> Any:
        """Open the object the hard link ``name`` of ``group`` names; refuse any other link."""
        h5l, where = self.h5py.h5l, f"{self.where}: '{key}'"
        if not name or name == b"." or b"/" in name:
            raise FormatError(f"{where}: a link name libhdf5 would read as a path; expected one plain name")
        with _h5_errors(where):
            kind = group.links.get_info(name).type
            if kind == h5l.TYPE_HARD:
                return self.h5py.h5o.open(group, name)
            target = group.links.get_val(name) if kind in (h5l.TYPE_SOFT, h5l.TYPE_EXTERNAL) else None
        if kind == h5l.TYPE_EXTERNAL:
            file_name, obj = (t.decode("utf-8", "replace") for t in target)
            raise UnsafeFileError(f"{where}: an external link to '{obj}' in the file {file_name!r}; tensorfile never "
                                  "opens another file for an HDF5 file")
        if kind == h5l.TYPE_SOFT:
            raise UnsafeFileError(f"{where}: a soft link to {target.decode('utf-8', 'replace')!r}; tensorfile "
                                  "reads only hard links (datasets and groups where they are)")
        raise UnsafeFileError(f"{where}: a user-defined link (type {kind}); tensorfile reads only hard links")

    def _dataset(self, dsid: Any, key: str) -> Any:
        """The dataset's values in a new native-order array (an :class:`._index.Entry` when the reader is lazy),
        or None for a non-numeric dataset."""
        plan = self._plan(dsid, key)
        if plan is None:
            return None
        if self.lazy:
            dtype = dtype_from_name("bfloat16") if plan.bfloat16 and plan.dtype.kind != "c" else plan.dtype
            return Entry(dtype, plan.shape, lambda budget, what: self._values(plan, budget))
        return self._values(plan, self.budget)

    def _plan(self, dsid: Any, key: str) -> "_Plan | None":
        """The dataset checked (no other file, no plugin) and described; None when it holds no weights."""
        h5d, what = self.h5py.h5d, f"{self.inside}dataset '{key}'"
        where = f"{self.where}: dataset '{key}'"
        self.budget.count_tensor(what)
        with _h5_errors(where):
            dcpl = dsid.get_create_plist()
            layout = dcpl.get_layout()
            if layout == h5d.VIRTUAL:
                raise UnsafeFileError(f"{where}: a virtual dataset (mapped from other HDF5 files); tensorfile never "
                                      "opens another file for an HDF5 file")
            if dcpl.get_external_count():
                files = [dcpl.get_external(i)[0].decode("utf-8", "replace") for i in range(dcpl.get_external_count())]
                raise UnsafeFileError(f"{where}: its data is stored outside the file, in {files}; tensorfile never "
                                      "reads another file for an HDF5 file")
            for i in range(dcpl.get_nfilters()):
                code = dcpl.get_filter(i)[0]
                if code not in self.filters:
                    raise UnsafeFileError(f"{where}: filter {code} is not built into HDF5 and would load a plugin")
            dataset = self.h5py.Dataset(dsid)
            shape = dataset.shape
            try:
                dtype = dataset.dtype
            except TypeError:  # a type h5py has no NumPy dtype for (bitfield...): not a weight
                return None
            bfloat16 = _marked_bfloat16(dataset)
            chunk = dcpl.get_chunk() if layout == h5d.CHUNKED else None
            file_itemsize = dsid.get_type().get_size()
        plain = dtype.names is None and dtype.subdtype is None
        raw16 = bfloat16 and plain and dtype.itemsize == 2 and dtype.kind in "iuV"
        if shape is None or not plain or (dtype.kind not in "biufc" and not raw16):
            return None  # no data (a null dataspace), strings, references, compound, opaque, arrays
        return _Plan(dataset, key, what, where, tuple(shape), dtype, bfloat16, chunk, file_itemsize)

    def _values(self, plan: "_Plan", budget: Budget) -> np.ndarray:
        """Read a planned dataset into a new array, every byte libhdf5 and we allocate charged to ``budget`` first."""
        what, where, shape, dtype = plan.what, plan.where, plan.shape, plan.dtype
        if plan.chunk is not None:
            chunk_bytes = int(np.prod(plan.chunk, dtype=object)) * max(plan.file_itemsize, dtype.itemsize)
            held = self.chunk_bytes.get(budget, 0)
            if chunk_bytes > held:  # libhdf5 holds one chunk at a time: charge the largest
                budget.charge(chunk_bytes - held, f"{what}: a chunk of {list(plan.chunk)}")
                self.chunk_bytes[budget] = chunk_bytes
            chunks = int(np.prod([-(-n // max(c, 1)) for n, c in zip(shape, plan.chunk)], dtype=object))
            budget.charge(chunks * CHUNK_OVERHEAD, f"{what}: libhdf5's bookkeeping for {chunks} chunks")
        dtype = dtype.newbyteorder("=")
        count = int(np.prod(shape, dtype=object))
        budget.charge(count * dtype.itemsize, f"{what} of shape {list(shape)} and dtype {dtype}")
        # Private memory (format/memory.py); an enum's dtype metadata (bool's included) tells h5py the memory type,
        # so such arrays keep NumPy's allocation, which carries it.
        out = np.empty(shape, dtype) if dtype.metadata else empty_array(shape, dtype)
        if count:
            with _h5_errors(where):
                plan.dataset.read_direct(out)
        out = out.view(np.dtype(dtype.str))  # the same bytes, without h5py's enum metadata
        if plan.bfloat16 and dtype.kind != "c":
            bf16 = dtype_from_name("bfloat16")
            if dtype.itemsize == 2 and dtype.kind != "f":
                return out.view(bf16)  # Keras stored the raw 16 bits
            budget.charge(count * 2, f"{what} as bfloat16")
            return out.astype(bf16)
        return out


@dataclass(frozen=True)
class _Plan:
    """A dataset to read: checked, described, not read."""

    dataset: Any
    key: str
    what: str  # the dataset, as the budget names it
    where: str  # the file and dataset, as errors name them
    shape: tuple[int, ...]
    dtype: np.dtype  # as h5py reads it (bfloat16 marked apart)
    bfloat16: bool
    chunk: tuple[int, ...] | None
    file_itemsize: int


def _marked_bfloat16(dataset: Any) -> bool:
    """Whether Keras marked the dataset ``attrs["dtype"] = "bfloat16"`` (a small string attribute)."""
    if "dtype" not in dataset.attrs:
        return False
    if dataset.attrs.get_id("dtype").get_storage_size() > 64:
        return False  # not a dtype name
    value = dataset.attrs["dtype"]
    return isinstance(value, (str, bytes)) and value in ("bfloat16", b"bfloat16")


def _keras_sniff(probe: Probe) -> float:
    names = probe.zip_names()
    return 0.9 if names and KERAS_WEIGHTS in names and "config.json" in names else 0.0


def _read_keras_file(path: str, budget: Budget) -> dict[str, np.ndarray]:
    with open_zip(path, budget) as zf:
        return read_keras_archive(path, zf, budget)


#: HDF5 files (Keras 3 ``.weights.h5``, Keras 2 ``.h5``): every numeric dataset by its full path.
HDF5 = Format(
    "hdf5", "HDF5 (Keras weights)", "numpy", (".h5", ".hdf5", ".weights.h5"),
    sniff=lambda probe: float(probe.prefix.startswith(HDF5_MAGIC)), read=lambda path, budget: read_h5(path, budget),
    index=index_h5,
)  # fmt: skip
#: Keras 3 ``.keras`` archives: the datasets of their ``model.weights.h5``.
KERAS = Format("keras", "Keras .keras archive", "numpy", (".keras",), sniff=_keras_sniff, read=_read_keras_file,
               index=index_keras)
