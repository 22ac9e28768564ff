"""The manifest of a distributed checkpoint: one JSON file that says where every slice of every tensor is.

A distributed checkpoint is a folder (``docs/FORMAT.md``, "Distributed checkpoints")::

    <folder>/manifest.json                     the commit: written last, atomically (never a pickle)
    <folder>/rank00000-<8 hex>.tensorfile      each rank's slices: an ordinary tensorfile file (checksums)
    <folder>/rank00001-<8 hex>.tensorfile      ...

The manifest, UTF-8 JSON, starts with its ``"format"`` key (``sniff`` looks for it)::

    {"format": "tensorfile.distributed", "version": 1, "world_size": 2,
     "files": ["rank00000-1a2b3c4d.tensorfile", ...],
     "tensors": {NAME: {"dtype": "float32", "shape": [7, 5], "framework": "torch", "record": {...},
                        "chunks": [{"file": 0, "offsets": [0, 0], "lengths": [4, 5]}, ...]}, ...},
     "structure": NODE, "metadata": {str: str}}

Rules a reader enforces (anything else is a :class:`FormatError`): ``files`` are plain file names in the
folder (``[A-Za-z0-9_.-]``, not starting with a dot) and distinct; each chunk names a file by index and
holds, in that file, a tensor named ``NAME`` of shape ``lengths`` and dtype ``dtype`` (checked when read);
``0 <= offsets[d]``, ``0 < lengths[d]``, ``offsets[d] + lengths[d] <= shape[d]``; a file holds at most one
chunk of a tensor; and the chunks of a tensor are exactly the cells of a grid over it (each dim cut at the
chunks' bounds; every cell one chunk), so that every element is stored exactly once (a tensor of zero
elements has no chunk). ``structure`` is tensorfile's structure record (:mod:`tensorfile.tree`): every
tensor node names a tensor of ``tensors``. ``dtype`` is a tensorfile dtype name
(:mod:`tensorfile.format.dtypes`); ``record`` holds a tensor's framework flags (``parameter``,
``requires_grad``).

Nothing here imports a framework.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import FormatError, UnsupportedTypeError
from ..format.dtypes import dtype_from_name
from ..format.header import strict_json
from ..limits import DEFAULT_LIMITS, Limits
from ..tree import short

__all__ = ["MANIFEST", "FORMAT_NAME", "VERSION", "Chunk", "Entry", "Manifest", "read", "write", "dumps",
           "manifest_in", "looks_like", "SHARD_FILE", "check_grid", "parse", "check_size"]  # fmt: skip

#: The manifest's file name in a checkpoint folder.
MANIFEST = "manifest.json"
FORMAT_NAME = "tensorfile.distributed"
VERSION = 1
#: Names the writer gives shard files (and removes, when no manifest names them any more).
SHARD_FILE = re.compile(r"rank[0-9]{5,}-[0-9a-f]{8}\.tensorfile")
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")
_SNIFF = re.compile(rb'\s*\{\s*"format"\s*:\s*"tensorfile\.distributed"')
_FLAG_KEYS = ("parameter", "requires_grad")
_FRAMEWORKS = ("numpy", "torch", "tensorflow", "jax", "mxnet")
#: The largest manifest read (bytes); a checkpoint of a million tensors on 64 ranks stays far below.
MAX_MANIFEST_BYTES = 256 << 20


@dataclass(frozen=True)
class Chunk:
    """One stored slice of a tensor: ``tensor[offsets[0]:offsets[0]+lengths[0], ...]`` in ``files[file]``."""

    file: int
    offsets: tuple[int, ...]
    lengths: tuple[int, ...]

    @property
    def size(self) -> int:
        """Elements in the chunk."""
        return math.prod(self.lengths)


@dataclass(frozen=True)
class Entry:
    """A tensor of the checkpoint: its global shape and dtype, and its chunks."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    framework: str
    record: dict[str, bool]
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest (see the module docs)."""

    files: tuple[str, ...]
    tensors: dict[str, Entry]
    structure: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)
    world_size: int = 1


def looks_like(prefix: bytes) -> bool:
    """True when a file starts as a manifest does (``{"format": "tensorfile.distributed"``)."""
    return _SNIFF.match(prefix) is not None


def manifest_in(folder: str) -> str | None:
    """The manifest of the checkpoint folder ``folder``, or None when it holds none."""
    path = os.path.join(folder, MANIFEST)
    return path if os.path.isfile(path) else None


def dumps(manifest: Manifest) -> bytes:
    """The manifest as UTF-8 JSON bytes, ``"format"`` first."""
    doc = {
        "format": FORMAT_NAME,
        "version": VERSION,
        "world_size": manifest.world_size,
        "files": list(manifest.files),
        "tensors": {
            e.name: {"dtype": e.dtype, "shape": list(e.shape), "framework": e.framework, "record": e.record,
                     "chunks": [{"file": c.file, "offsets": list(c.offsets), "lengths": list(c.lengths)}
                                for c in e.chunks]}
            for e in manifest.tensors.values()
        },
        "structure": manifest.structure,
        "metadata": manifest.metadata,
    }  # fmt: skip
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"


def write(path: str, manifest: Manifest) -> None:
    """Write ``manifest`` to ``path`` atomically and durably (:func:`tensorfile.atomic.atomic_write`): the commit."""
    from ..atomic import atomic_write

    data = memoryview(dumps(manifest))
    with atomic_write(path) as f:
        while data:
            data = data[f.write(data) :]


def _ints(value: Any, what: str, path: str, minimum: int) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(type(v) is int and v >= minimum for v in value):
        raise FormatError(f"{path}: {what}: expected a list of ints >= {minimum}, found {short(value)}")
    return tuple(value)


def read(path: str, limits: Limits = DEFAULT_LIMITS) -> Manifest:
    """Read and check the manifest at ``path`` (see the module docs for every rule).

    Raises:
        FileNotFoundError: no such file.
        FormatError: not a manifest, or one that breaks a rule (the message names the tensor).
        LimitError: larger than ``limits.max_header_bytes`` or :data:`MAX_MANIFEST_BYTES`, or more chunks than
            ``limits.max_tensors``.
    """
    # non-blocking open: a FIFO put in a manifest's place must not hang the reader (or a checkpoint writer)
    with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
        status = os.fstat(f.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise FormatError(f"{path}: not a regular file (a FIFO, a device or a folder in a manifest's place)")
        check_size(path, status.st_size, limits)
        data = f.read(status.st_size + 1)
    return parse(path, data, limits)


def check_size(path: str, size: int, limits: Limits = DEFAULT_LIMITS) -> None:
    """Refuse a manifest of ``size`` bytes before it is read (the checks of :func:`read`).

    Raises:
        LimitError: over ``limits.max_header_bytes``. FormatError: over :data:`MAX_MANIFEST_BYTES`.
    """
    limits.budget(path, size).check_header(size, "the manifest")
    if size > MAX_MANIFEST_BYTES:
        raise FormatError(f"{path}: a manifest of {size} bytes, more than {MAX_MANIFEST_BYTES}")


def parse(path: str, data: bytes, limits: Limits = DEFAULT_LIMITS) -> Manifest:
    """The checked manifest from its bytes ``data`` (``path`` names it in messages); see :func:`read`."""
    check_size(path, len(data), limits)
    budget = limits.budget(path, len(data))
    try:
        doc = strict_json(data.decode("utf-8"))
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: not a distributed checkpoint manifest (invalid JSON: {short(str(exc))})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise FormatError(f"{path}: not a distributed checkpoint manifest: expected an object with "
                          f"\"format\": {FORMAT_NAME!r}")  # fmt: skip
    if doc.get("version") != VERSION:
        raise FormatError(f"{path}: manifest version {short(doc.get('version'))}; this tensorfile reads version {VERSION}")
    expected = {"format", "version", "world_size", "files", "tensors", "structure", "metadata"}
    if set(doc) != expected:
        raise FormatError(f"{path}: manifest keys {sorted(doc)}; expected {sorted(expected)}")
    world = doc["world_size"]
    if type(world) is not int or world < 1:
        raise FormatError(f"{path}: world_size: expected an int >= 1, found {short(world)}")
    files = doc["files"]
    if not isinstance(files, list) or not all(isinstance(n, str) and _FILE_NAME.fullmatch(n) for n in files):
        raise FormatError(f"{path}: files: expected plain file names in the checkpoint's folder, found {short(files)}")
    if len(set(files)) != len(files) or MANIFEST in files:
        raise FormatError(f"{path}: files: a file is named twice, or the manifest names itself")
    metadata = doc["metadata"]
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError(f"{path}: metadata: expected an object of str to str")
    raw = doc["tensors"]
    if not isinstance(raw, dict):
        raise FormatError(f"{path}: tensors: expected an object of names to tensors")
    tensors = {name: _entry(path, name, spec, len(files), budget) for name, spec in raw.items()}
    if not isinstance(doc["structure"], dict):
        raise FormatError(f"{path}: structure: expected a structure node (an object)")
    _check_names(path, doc["structure"], tensors, limits.max_depth)
    return Manifest(tuple(files), tensors, doc["structure"], dict(metadata), world)


def _entry(path: str, name: str, spec: Any, files: int, budget: Any) -> Entry:
    where = f"{path}: tensor {short(name)}"
    keys = {"dtype", "shape", "framework", "record", "chunks"}
    if not isinstance(spec, dict) or set(spec) != keys:
        raise FormatError(f"{where}: expected an object with keys {sorted(keys)}, found {short(spec)}")
    if not isinstance(spec["dtype"], str):
        raise FormatError(f"{where}: dtype: expected a dtype name, found {short(spec['dtype'])}")
    try:
        dtype_from_name(spec["dtype"])
    except UnsupportedTypeError:
        raise FormatError(f"{where}: unknown dtype {short(spec['dtype'])}") from None
    shape = _ints(spec["shape"], f"tensor {short(name)}: shape", path, 0)
    if spec["framework"] not in _FRAMEWORKS:
        raise FormatError(f"{where}: framework {short(spec['framework'])}; expected one of {list(_FRAMEWORKS)}")
    record = spec["record"]
    if not isinstance(record, dict) or not all(k in _FLAG_KEYS and type(v) is bool for k, v in record.items()):
        raise FormatError(f"{where}: record: expected flags {list(_FLAG_KEYS)} as booleans, found {short(record)}")
    chunks_raw = spec["chunks"]
    if not isinstance(chunks_raw, list):
        raise FormatError(f"{where}: chunks: expected a list")
    chunks = []
    for raw in chunks_raw:
        budget.count_tensor(f"tensor {short(name)}: a chunk")
        if not isinstance(raw, dict) or set(raw) != {"file", "offsets", "lengths"}:
            raise FormatError(f"{where}: chunk {short(raw)}: expected keys file, offsets, lengths")
        index = raw["file"]
        if type(index) is not int or not 0 <= index < files:
            raise FormatError(f"{where}: chunk names file {short(index)}; the manifest lists {files} files")
        offsets = _ints(raw["offsets"], f"tensor {short(name)}: chunk offsets", path, 0)
        lengths = _ints(raw["lengths"], f"tensor {short(name)}: chunk lengths", path, 1)
        if len(offsets) != len(shape) or len(lengths) != len(shape) or any(
                o + n > d for o, n, d in zip(offsets, lengths, shape)):  # fmt: skip
            raise FormatError(f"{where}: chunk at {list(offsets)} of {list(lengths)} lies outside its shape {list(shape)}")
        chunks.append(Chunk(index, offsets, lengths))
    if len({c.file for c in chunks}) != len(chunks):
        raise FormatError(f"{where}: two chunks in one file")
    problem = check_grid(shape, chunks)
    if problem:
        raise FormatError(f"{where}: {problem}")
    return Entry(name, spec["dtype"], shape, spec["framework"], dict(record), tuple(chunks))


def check_grid(shape: tuple[int, ...], chunks: list[Chunk]) -> str | None:
    """Why ``chunks`` are not exactly the cells of a grid over ``shape`` (None when they are).

    O(n log n) in the number of chunks: per dim, the sorted set of chunk bounds cuts the dim; each chunk
    must span exactly one interval of every dim, no two chunks the same cell, and as many chunks as cells.
    """
    if math.prod(shape) == 0:
        return None if not chunks else "a tensor of zero elements with chunks"
    if not chunks:
        return "no chunk holds its data"
    cells = 1
    index: list[dict[int, int]] = []
    for d, size in enumerate(shape):
        bounds = sorted({0, size} | {c.offsets[d] for c in chunks} | {c.offsets[d] + c.lengths[d] for c in chunks})
        index.append({b: i for i, b in enumerate(bounds)})
        cells *= len(bounds) - 1
        if cells > len(chunks):
            return f"its chunks leave part of it uncovered ({len(chunks)} chunks)"
    seen = set()
    for c in chunks:
        cell = []
        for d in range(len(shape)):
            low, high = index[d][c.offsets[d]], index[d][c.offsets[d] + c.lengths[d]]
            if high != low + 1:
                return f"chunk at {list(c.offsets)} spans more than one cell of the grid its chunks cut"
            cell.append(low)
        seen.add(tuple(cell))
    if len(seen) != len(chunks) or cells != len(chunks):
        return f"its chunks overlap or leave part of it uncovered ({len(chunks)} chunks, {cells} cells)"
    return None


def _check_names(path: str, root: dict[str, Any], tensors: Mapping[str, Entry], max_depth: int) -> None:
    """Every tensor node of the structure names a tensor of the manifest."""
    stack = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise FormatError(f"{path}: structure nested more than {max_depth} deep")
        if not isinstance(node, dict):
            raise FormatError(f"{path}: invalid structure node {short(node)}")
        kind = node.get("type")
        if kind == "tensor":
            if not isinstance(node.get("name"), str) or node["name"] not in tensors:
                raise FormatError(f"{path}: the structure names tensor {short(node.get('name'))}, which the manifest lacks")
        elif kind in ("list", "tuple") and isinstance(node.get("items"), list):
            stack.extend((n, depth + 1) for n in node["items"])
        elif kind in ("dict", "ordered_dict") and isinstance(node.get("items"), list):
            for pair in node["items"]:
                if isinstance(pair, list) and len(pair) == 2:
                    stack.append((pair[1], depth + 1))
                else:
                    raise FormatError(f"{path}: invalid dict item {short(pair)} in the structure")
