"""The file API: :func:`save` and :func:`load` (:func:`open` is in :mod:`tensorfile.lazy`).

Files follow ``docs/FORMAT.md``: a valid safetensors file (huggingface/safetensors,
``safetensors/src/tensor.rs``) whose ``__metadata__`` also carries tensorfile's
record of structure, checksums and shared storage (:mod:`tensorfile.format.record`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections import OrderedDict
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from ._gc import collector_paused
from .atomic import atomic_write
from .errors import FormatError, IntegrityError, UnsupportedTypeError
from .format.checksums import checksum
from .format.dtypes import STORED_AS, byte_view, dtype_from_name, name_of
from .format.header import TensorEntry
from .format.reader import SafetensorsReader
from .format.record import (
    RECORD_KEY,
    dump_record,
    logical_shape,
    read_record,
    seal,
)
from .format.writer import Tensor, layout_order, write_tensors
from .formats._write import flat_tensors
from .frameworks import get_adapter
from .handoff import check_framework, convert_tree, on_device, pick_adapter, source_framework, to_framework
from .limits import DEFAULT_LIMITS, Limits, out_of_memory
from .storage import is_url, local_path
from .tree import flatten, shared_groups, unflatten

__all__ = ["save", "load"]

#: A progress bar appears on a terminal for files of at least this many bytes, once this many seconds pass.
PROGRESS_MIN_BYTES = 64 << 20
PROGRESS_DELAY = 1.0


@contextlib.contextmanager
def _progress(total: int, description: str, show: bool | None = None) -> Iterator[Callable[[int], None] | None]:
    """A tqdm bar on stderr (updated with bytes done), only on a terminal and only for saves and loads that
    last (see above); ``show`` True: always, at once; False: never."""
    if show is None:
        show = total >= PROGRESS_MIN_BYTES and getattr(sys.stderr, "isatty", lambda: False)()
        delay = PROGRESS_DELAY
    else:
        delay = 0
    if not show:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=description,
              delay=delay, leave=False, file=sys.stderr) as bar:  # fmt: skip
        yield bar.update


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError("metadata must map str to str")
    if RECORD_KEY in metadata:
        raise ValueError(f"metadata key {RECORD_KEY!r} is reserved for tensorfile's own record")
    for key, value in metadata.items():
        try:
            key.encode("utf-8"), value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"metadata entry {key!r}: not valid Unicode text") from None
    return dict(metadata)


@collector_paused
def save(
    obj: Any,
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, str] | None = None,
    format: str | None = None,
    max_shard_size: int | str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Save tensors, or nested containers of tensors and plain values, to ``path``.

    The file is a valid safetensors file: any safetensors tool opens it. A flat
    ``dict[str, tensor]`` (a state_dict) is stored under its own keys. The
    structure, each tensor's framework, an XXH3-64 checksum per tensor and
    storage shared between tensors are recorded so :func:`load` restores them.

    Args:
        obj: a tensor (NumPy array or scalar, ``torch.Tensor``, ``nn.Parameter``),
            or dict / OrderedDict / list / tuple nesting tensors and None, bool,
            int, float, str. Dict keys may be str, int, float, bool, None or
            tuples of those. dtypes: bool, (u)int8-64, float16, bfloat16, float32,
            float64, float8 (e4m3fn, e5m2 and the fnuz / e8m0 variants),
            complex64, complex128. Any shape, 0-d and zero-size included; any
            strides or byte order (written C order, little-endian).
        path: destination, any name or suffix (str or os.PathLike). Written
            atomically: a temporary file in the same folder is fsynced and
            renamed over ``path``, then the folder is fsynced. An existing file
            is never truncated; on error the temporary is removed.
        metadata: user metadata, str -> str, stored as ``__metadata__`` entries
            (the key ``"tensorfile"`` is reserved).
        format: ``None`` or ``"tensorfile"`` (the default file), or
            ``"safetensors"``: a plain safetensors file of a flat
            ``dict[str, tensor]`` with only the user's metadata (no structure,
            checksums or sharing; shared tensors are written each on its own,
            complex128 is refused: safetensors has no code for it).
            Other tools' files, which load in those tools without tensorfile:
            ``"torch"`` (a ``torch.save`` zip archive for
            ``torch.load(weights_only=True)``; any structure; Parameters and
            tied storage kept; tensors recorded on the CPU), ``"npz"`` (as
            ``np.savez``, for ``np.load(allow_pickle=False)``; no bfloat16 or
            float8), ``"mxnet"`` (as ``mx.nd.save``: ``nd.load`` and Gluon
            ``load_parameters``; no 0-d or zero-size arrays) and ``"mxnet-np"``
            (as ``npx.save``, for ``npx.load`` in NumPy mode). npz and MXNet
            files hold one tensor, a list / tuple of tensors or a flat dict of
            str to tensor; none of the three holds ``metadata``. ``"dcp"``:
            ``path`` is a PyTorch Distributed Checkpoint folder for
            ``torch.distributed.checkpoint.load`` (a state dict of nested dicts
            and lists; one rank's ``.distcp`` file and a ``.metadata`` written
            without ``pickle``; the previous checkpoint stays readable until the
            new ``.metadata`` is renamed in: :mod:`tensorfile.formats.dcp_write`).
        max_shard_size: write the Hugging Face sharded layout (reference:
            huggingface/huggingface_hub ``src/huggingface_hub/serialization/_base.py``):
            shards of at most this many bytes of tensor data (an int, or
            ``"5GB"`` = 5 * 10**9, ``"500MiB"`` = 500 * 2**20; a larger tensor
            gets a shard of its own) named ``model-00001-of-00003.safetensors``
            after ``path`` (``model.safetensors``), plus the index
            ``model.safetensors.index.json``. With one shard only ``path`` is
            written, as huggingface_hub does. ``obj`` must be a flat dict of str to
            tensor; shards are tensorfile files, or plain safetensors files with
            ``format="safetensors"``, each with ``{"format": "pt"}`` in its
            metadata (huggingface_hub's loader requires it) unless ``metadata``
            says otherwise. ``load(path)`` reads either layout. Each file is
            written atomically, the index last; then files beside it named as
            shards of the same checkpoint but not part of this one (an earlier
            save's), and ``path`` itself after a save of several shards, are
            removed. Nothing else is touched.
        storage_options: for a ``path`` that is an fsspec URL (``s3://bucket/key``,
            ``gs://...``, ``memory://...``; needs ``pip install 'tensorfile[remote]'``
            and the protocol's backend, e.g. s3fs): options for its filesystem, as
            ``fsspec.core.url_to_fs(path, **storage_options)`` takes them
            (``{"endpoint_url": ...}``; credentials otherwise from the environment, as
            fsspec finds them). The file is written to a local temporary file
            (``TMPDIR``) and uploaded in one piece: one PUT, or (s3fs, files of 100 MiB
            or more) a multipart upload completed only at the end and aborted on error,
            so a failed save leaves no partial object under the name. Ignored for a
            local path (``file://`` URLs are local paths). ``max_shard_size`` is not
            available for URLs.

    Raises:
        UnsupportedTypeError: a value or dtype cannot be stored; the message
            names its place (``obj['optimizer']['state'][0]['fn']``) and type.
        TypeError, ValueError: bad ``metadata``, ``format`` or ``max_shard_size``,
            or (sharded) a ``path`` that names a folder.
        OSError: the file cannot be written (an existing file is left intact).
        ImportError: ``path`` is a URL and fsspec or its backend is not installed.

    Example:
        >>> tensorfile.save({"w": np.ones((2, 3), np.float32)}, "mydict")
    """
    from . import formats

    fmt = formats.get(format or "tensorfile")  # ValueError names the formats
    if fmt.write is None:
        raise ValueError(f"unknown format {format!r} to write; expected one of {formats.written()}")
    path = local_path(path)
    if is_url(path):
        if max_shard_size is not None:
            raise ValueError(f"{path}: max_shard_size: sharded saves write several files and an index; to object "
                             "storage tensorfile writes single files")  # fmt: skip
        from .storage.files import save_url

        write = (lambda local: _save(obj, local, metadata, durable=False)) if fmt.name == "tensorfile" else (
            lambda local: fmt.write(obj, local, metadata, _progress))  # fmt: skip
        save_url(path, storage_options, write)  # type: ignore[arg-type]
    elif max_shard_size is not None:
        if fmt.name not in ("tensorfile", "safetensors"):
            raise ValueError(f"max_shard_size: format {format!r} has no sharded layout; shards are safetensors files")
        _save_sharded(obj, os.fspath(path), metadata, format, max_shard_size)
    else:
        fmt.write(obj, path, metadata, _progress)


def save_tensorfile(obj: Any, path: str | os.PathLike[str], metadata: Mapping[str, str] | None) -> None:
    """:func:`save` of a tensorfile file (fsynced)."""
    _save(obj, path, metadata, durable=True)


def _save_sharded(obj: Any, path: str, metadata: Mapping[str, str] | None, format: str | None, limit: int | str) -> None:
    from .formats import sharded

    user = _check_metadata(metadata)
    names, arrays = flat_tensors(obj, "a sharded safetensors checkpoint")
    if names is None:
        raise UnsupportedTypeError("obj: a sharded safetensors checkpoint holds a flat dict of str to tensor")
    tensors = {k: obj[k] for k in names}  # as given: each shard records its tensors' framework
    plan = sharded.plan_shards({k: a.nbytes for k, a in zip(names, arrays)}, sharded.parse_size(limit))
    files, index = sharded.shard_names(path, len(plan))
    write = save_plain if format == "safetensors" else lambda o, p, m: _save(o, p, m, durable=True)
    folder = os.path.dirname(index)
    single = index[: -len(".index.json")]
    shard_metadata = {"format": "pt", **user}  # huggingface_hub's loader requires a "format" entry in each shard
    if len(plan) == 1:  # one file, no index, as huggingface_hub writes it
        write(tensors, single, shard_metadata)
        with contextlib.suppress(FileNotFoundError):
            os.remove(index)
        keep: set[str] = set()
    else:
        for shard, members in zip(files, plan):
            write({k: tensors[k] for k in members}, os.path.join(folder, shard), shard_metadata)
        weight_map = {k: shard for shard, members in zip(files, plan) for k in members}
        sharded.write_index(index, weight_map, sum(a.nbytes for a in arrays), user)
        keep = set(files)
        if os.path.isfile(single):  # a one-file save of the same checkpoint: readers would prefer it
            os.remove(single)
    for name in sharded.stale_shards(index, keep):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, name))


def save_plain(obj: Any, path: str | os.PathLike[str], metadata: Mapping[str, str] | None) -> None:
    """A plain safetensors file: a flat dict of tensors and string metadata, nothing of tensorfile's own."""
    user = _check_metadata(metadata)
    if type(obj) not in (dict, OrderedDict) or not all(isinstance(k, str) for k in obj):
        raise UnsupportedTypeError(f"obj: a plain safetensors file holds a flat dict of str to tensor, not {type(obj).__name__}")
    tensors = []
    for name, value in obj.items():
        flat = flatten(value)
        if flat.root.get("type") != "tensor" or len(flat.leaves) != 1:
            raise UnsupportedTypeError(f"obj[{name!r}]: a plain safetensors file holds only tensors, not {type(value).__name__}")
        array = flat.leaves[0].array
        if name == "__metadata__":  # the header's own key: the file would be unreadable
            raise UnsupportedTypeError("obj['__metadata__']: a safetensors file cannot hold a tensor named __metadata__")
        if name_of(array.dtype) in STORED_AS:
            raise UnsupportedTypeError(f"obj[{name!r}]: safetensors has no dtype code for {name_of(array.dtype)}")
        tensors.append(Tensor(name, array))
    with atomic_write(path) as f:
        write_tensors(f, layout_order(tensors), lambda sums: user, align=8)  # as the reference writer pads


@collector_paused
def _save(obj: Any, path: str | os.PathLike[str], metadata: Mapping[str, str] | None, *, durable: bool) -> None:
    """:func:`save`; ``durable=False`` skips the fsyncs (benchmarks compare with peers that do not fsync)."""
    user = _check_metadata(metadata)
    flat = flatten(obj)
    groups = shared_groups(flat.leaves)
    records: dict[str, dict[str, Any]] = {}
    for leaf in flat.leaves:
        info: dict[str, Any] = {"framework": leaf.framework, **leaf.record}
        name = name_of(leaf.array.dtype)
        if name in STORED_AS:
            info["dtype"] = name
        if leaf.tied_to is not None:
            info["tied_to"] = leaf.tied_to
        records[leaf.name] = info

    def header_metadata(sums: Mapping[str, str]) -> dict[str, str]:
        described = {name: {"checksum": sums[name], **info} for name, info in records.items()}
        return {RECORD_KEY: dump_record(flat.root, described, groups), **user}  # the record first: see seal()

    tensors = layout_order([Tensor(leaf.name, leaf.array) for leaf in flat.leaves])
    total = sum(t.array.nbytes for t in tensors)
    with atomic_write(path, durable=durable) as f, _progress(total, f"saving {os.path.basename(os.fspath(path))}") as bar:
        write_tensors(f, tensors, header_metadata, seal=seal, progress=bar)


def _as_logical(array: np.ndarray, info: Mapping[str, Any], entry: TensorEntry) -> np.ndarray:
    dtype = info.get("dtype")
    if dtype in STORED_AS:
        return array.view(dtype_from_name(dtype)).reshape(logical_shape(entry, info))
    return array


def resolve_index(path: str | os.PathLike[str]) -> str:
    """``path``, or ``path + ".index.json"`` when only that exists (``save(..., max_shard_size=)`` wrote
    shards and their index, and ``path`` names the checkpoint), or for a folder stored by a format as a
    whole (a distributed checkpoint) the file it is read through (:func:`tensorfile.formats.in_folder`)."""
    path = os.fspath(path)
    if not os.path.exists(path) and os.path.isfile(path + ".index.json"):
        return path + ".index.json"
    if os.path.isdir(path):
        from .formats import in_folder

        return in_folder(path) or path
    return path


def _check_limits(limits: Limits | None) -> Limits:
    if limits is None:
        return DEFAULT_LIMITS
    if not isinstance(limits, Limits):
        raise TypeError(f"limits must be a tensorfile.Limits, not {type(limits).__name__}")
    return limits


def find_format(path: str) -> Any:
    """The :class:`tensorfile.formats.Format` that reads ``path``, by content. A folder goes to the format that
    claims it (a DCP checkpoint); another folder, a FIFO or a device to the safetensors reader, which names the problem.

    Raises:
        FormatError: no format claims the file (the message says what it looks like).
        OSError: the file cannot be opened (FileNotFoundError when it does not exist).
    """
    from . import formats
    from .formats.base import Probe

    probe = Probe.of(path)
    if probe is None and os.path.isdir(path):
        folder = formats.detect_folder(path)
        if folder is not None:
            return folder
    found = formats.detect(probe)
    if found is None and probe is not None:
        raise formats.not_tensors(probe)
    return found or formats.get("safetensors")


def _verify(path: str, name: str, expected: str, found: str | None) -> None:
    if found != expected:
        raise IntegrityError(
            f"{path}: tensor {name!r} is corrupt: checksum (xxh3-64) expected {expected}, found {found}"
        )


@collector_paused
def load(
    path: str | os.PathLike[str], *, framework: str | None = None, map_location: Any = None, device: Any = None,
    limits: Limits | None = None, storage_options: Mapping[str, Any] | None = None,
) -> Any:  # fmt: skip
    """Load what :func:`save` wrote, any safetensors file, or another tool's file, from ``path``.

    Other tools' files are recognized by their content (never their suffix) and
    read without their framework and without running any code from them:
    ``torch.save`` files (zip and legacy; one restricted unpickler that never
    imports), NumPy ``.npy`` / ``.npz`` (object arrays as plain data only),
    MXNet NDArray files (``nd.save``, ``npx.save``, Gluon parameters), Keras
    ``.weights.h5`` / ``.keras`` / Keras 2 ``.h5`` (a flat dict by HDF5 path),
    Hugging Face ``model.safetensors.index.json`` (all shards as one dict), and
    PyTorch Distributed Checkpoint (DCP) folders (a flat dict by DCP's dotted
    names, each tensor assembled from its chunks; :mod:`tensorfile.formats.dcp`).

    Args:
        path: the file, or a DCP checkpoint's folder. Where it does not exist
            but ``path + ".index.json"`` does (a sharded save), the shards are
            read through that index.
        framework: ``None`` (each tensor to the framework it was saved from,
            torch / MXNet for their own files, when that framework is installed
            (it is imported then); else NumPy, with one warning naming what is
            missing; NumPy for files without tensorfile's record), or one of
            ``"numpy"``, ``"torch"``, ``"tensorflow"``, ``"jax"``, ``"mxnet"``.
            Values and dtypes are kept across frameworks (bfloat16 and float8
            through ``ml_dtypes`` in NumPy; 64-bit JAX arrays stay 64-bit).
        map_location: as in ``torch.load``: a device string, ``torch.device``,
            a dict mapping saved to target device strings, or a callable
            ``(tensor, saved_location) -> tensor``. Used for torch tensors only.
            By default a tensor returns to the device it was saved from, or to
            the CPU when that device is absent. Tensors bound for a CUDA device
            are read through a few reused pinned host buffers (at most 64 MiB),
            the disk read overlapped with the copy to the device
            (:mod:`tensorfile.frameworks.torch_device`).
        device: where TensorFlow, JAX and MXNet tensors go: ``"/GPU:0"`` (TF),
            a ``jax.Device`` or ``"gpu:0"`` (JAX), an ``mx.Context`` (MXNet).
            Default: each framework's default device (MXNet: the CPU).
        limits: what the file may make tensorfile allocate and walk through
            (:class:`tensorfile.Limits`; default: 4x the file's size + 64 MiB
            of memory, 2**20 tensors, 200 levels of nesting). Every reader
            charges each allocation before it happens. Raise it for a trusted
            file that needs more (a highly compressed ``.npz``).
        storage_options: for a ``path`` that is an fsspec URL (``s3://bucket/key``...;
            see :func:`save`): options for its filesystem. The object is downloaded
            whole into a local temporary file (``TMPDIR``) and read there; errors
            name the URL. A sharded checkpoint's index is refused there (its shards
            are other objects). Ignored for a local path.

    Returns:
        The saved structure with the same container types and key types;
        ``nn.Parameter`` comes back as a Parameter; tensors that shared storage
        share it again. A file without tensorfile's record (e.g. written by the
        reference safetensors library) loads as a flat ``dict[str, tensor]``.

    Raises:
        FileNotFoundError: no such file.
        FormatError: malformed, truncated or not a safetensors file.
        IntegrityError: a tensor's bytes do not match its checksum (names it).
        UnsafeFileError: a foreign pickle names a global outside the safe table
            (nothing is imported or run), or an HDF5 file keeps data outside itself.
        LimitError: the file asks for more than ``limits`` allow (a FormatError).

    Other tools' files carry no checksums of tensorfile's; the CRC-32 of a
    torch.save zip member is not checked on load (``torch.load`` does not
    check it either, and it costs more than the read); ``tensorfile verify``
    checks it.
        ValueError: unknown ``framework`` (the message lists the accepted ones).
        ImportError: the framework a tensor needs is not installed; for a URL, fsspec or its backend.
    """
    check_framework(framework)
    limits = _check_limits(limits)
    options = {"map_location": map_location, "device": device}
    path = local_path(path)
    if is_url(path):
        from .formats.distributed import load_url as load_checkpoint
        from .storage.files import load_url

        return load_url(path, storage_options, lambda local: _load_path(local, framework, options, limits),  # type: ignore[arg-type]
                        lambda url: load_checkpoint(url, storage_options, framework, options, limits))  # fmt: skip
    return _load_path(os.fspath(resolve_index(path)), framework, options, limits)


def _load_path(path: str, framework: str | None, options: dict[str, Any], limits: Limits) -> Any:
    """:func:`load` of a local file."""
    fmt = find_format(path)
    try:
        if fmt.load is not None:
            return fmt.load(path, framework, options, limits)
        value = fmt.read_value(path, limits)
    except MemoryError as exc:  # within the budget, but more than this machine gives (a sparse file, say)
        raise out_of_memory(path, exc) from None
    if framework is None:
        framework = source_framework(fmt.framework, path)
    return convert_tree(value, get_adapter(framework), path, options, limits.max_depth)


@collector_paused
def load_tensorfile(path: str, framework: str | None, options: Mapping[str, Any], limits: Limits) -> Any:
    """:func:`load` of a tensorfile or safetensors file: checksums verified, structure and shared storage rebuilt."""
    with SafetensorsReader(path, limits) as reader:
        budget = limits.budget(reader.path, reader.size)
        record = read_record(reader.header, reader.path)
        tied = {} if record is None else {n: i["tied_to"] for n, i in record.tensors.items() if "tied_to" in i}
        read = [e for e in reader.entries.values() if e.name not in tied]  # a tied name is its first tensor again
        for entry in read:
            budget.charge(entry.nbytes, f"tensor {entry.name!r}")
        if record is None:
            adapter = pick_adapter(framework, None, reader.path)
            streamed = on_device(reader, list(reader.entries.values()), {}, adapter.name, options, None)
            loaded = {e.name: to_framework(adapter, reader.path, e.name, array, {}, options) for e, array, _ in
                      reader.read_all(e for e in reader.entries.values() if e.name not in streamed)}  # fmt: skip
            return {name: streamed[name] if name in streamed else loaded[name] for name in reader.entries}
        shared = {m.name for group in record.shared for m in group.members}  # rebuilt from host arrays below
        streamed = on_device(reader, [e for e in read if e.name not in shared], record.tensors, framework, options,
                             _verify)  # fmt: skip
        arrays: dict[str, np.ndarray] = {}
        host = [e for e in read if e.name not in streamed]
        with _progress(sum(e.nbytes for e in host), f"loading {os.path.basename(reader.path)}") as bar:
            for entry, array, found in reader.read_all(host, hash=True):
                if bar is not None:
                    bar(entry.nbytes)
                info = record.tensors[entry.name]
                _verify(reader.path, entry.name, info["checksum"], found)
                arrays[entry.name] = _as_logical(array, info, entry)
        for name in tied:  # not loaded again, but its stored copy is checked: every reader sees the same values
            entry = reader.entries[name]
            stored = reader.map(entry) if entry.nbytes else np.empty(0, np.uint8)
            _verify(reader.path, name, record.tensors[name]["checksum"], checksum(byte_view(stored)))
            del stored
    objects: dict[str, Any] = dict(streamed)
    for group in record.shared:
        adapter = pick_adapter(framework, record.tensors[group.members[0].name]["framework"], reader.path)
        if group.nbytes > budget.allowed - budget.used:
            warnings.warn(
                f"{reader.path}: storage of {group.nbytes} bytes shared by {[m.name for m in group.members]} "
                "not rebuilt; loaded as separate tensors",
                stacklevel=2,
            )
            continue
        budget.charge(group.nbytes, f"storage shared by {[m.name for m in group.members]}")
        members = [(arrays[m.name], m.offset, m.strides, record.tensors[m.name]) for m in group.members]
        try:
            built = adapter.views(group.nbytes, members, options)
        except ValueError as exc:
            raise FormatError(f"{reader.path}: {exc}: {[m.name for m in group.members]}") from None
        if built is not None:
            objects.update(zip((m.name for m in group.members), built))
    for name, array in arrays.items():
        if name not in objects:
            info = record.tensors[name]
            objects[name] = to_framework(pick_adapter(framework, info["framework"], reader.path), reader.path, name, array, info, options)
    for name, first in tied.items():
        objects[name] = objects[first]

    def tensor(name: Any) -> Any:
        if not isinstance(name, str) or name not in objects:
            raise FormatError(f"{reader.path}: the structure names tensor {name!r}, which the file does not hold")
        return objects[name]

    try:
        return unflatten(record.root, tensor)
    except FormatError as exc:
        if str(exc).startswith(reader.path):
            raise
        raise FormatError(f"{reader.path}: {exc}") from None
