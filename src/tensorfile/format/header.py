"""Parse, validate and build the safetensors header.

Layout (huggingface/safetensors, ``safetensors/src/tensor.rs``)::

    u64 LE  N                      header length in bytes
    N bytes UTF-8 JSON object      the header, padded with trailing spaces
    ...     data buffer            tensors back to back, little-endian, C order

The header maps each tensor name to ``{"dtype": CODE, "shape": [...],
"data_offsets": [BEGIN, END]}`` (offsets relative to the data buffer, END
exclusive) and may hold ``"__metadata__"``, an object of string to string.

:func:`parse_header` enforces every rule of the reference reader and more:
N <= 100,000,000 and within the file; a JSON object with no duplicate keys at any
level; each entry has exactly the three fields; known dtype; non-negative integer
dims; element count x item size == END - BEGIN; entries sorted by BEGIN tile the
data buffer exactly (no hole, overlap or trailing byte). Nothing is allocated
before the header length has been checked against the file size.

NumPy is not imported here: codes are checked against :data:`.codes.CODES`, and
:attr:`TensorEntry.dtype` imports :mod:`.dtypes` only when first asked for, so
``tensorfile ls`` validates a header as fully as ``load`` does without NumPy.
"""

from __future__ import annotations

import errno
import json
import os
import re
import reprlib
import stat
import struct
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import FormatError, LimitError
from ..limits import Limits
from .codes import CODES
from .sniff import looks_like

if TYPE_CHECKING:
    import numpy as np

__all__ = ["MAX_HEADER_SIZE", "TensorEntry", "Header", "parse_header", "read_header", "build_header", "strict_json",
           "OPEN_FLAGS"]  # fmt: skip

#: Largest header the reference reader accepts, in bytes.
MAX_HEADER_SIZE = 100_000_000
#: Most dims a tensor may have (NumPy's limit).
MAX_DIMS = 64
#: Alignment, in bytes, of the data buffer's start: 16, the largest item size
#: (complex128), so every tensor is naturally aligned (the reference pads to 8).
HEADER_ALIGN = 16
METADATA_KEY = "__metadata__"
_ENTRY_FIELDS = frozenset(("dtype", "shape", "data_offsets"))
#: How a reader opens a file: read-only, not inherited by children, and without blocking on a FIFO
#: (no effect on regular files).
OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header describes it.

    Attributes:
        name: the tensor's name in the file.
        code: safetensors dtype code (``"F32"``...).
        shape: dims, each >= 0.
        begin, end: byte offsets in the data buffer, ``end`` exclusive.
    """

    name: str
    code: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes."""
        return self.end - self.begin

    @property
    def itemsize(self) -> int:
        """Bytes of one element (:data:`.codes.CODES`)."""
        return CODES[self.code][1]

    @cached_property
    def dtype(self) -> np.dtype:
        """The NumPy dtype of ``code`` (NumPy is imported on first use)."""
        from .dtypes import CODE_TO_DTYPE

        return CODE_TO_DTYPE[self.code]


@dataclass(frozen=True)
class Header:
    """A parsed header: entries in file order, ``__metadata__``, data start."""

    entries: dict[str, TensorEntry]
    metadata: dict[str, str] | None
    data_start: int
    raw: bytes = b""  # the N header bytes as stored


def strict_json(text: str) -> Any:
    """Parse JSON, refusing duplicate keys at any depth, the non-JSON NaN/Infinity and lone surrogates.

    Fast on large headers: the text is parsed at C speed, then a count of the keys
    written in the text that never falls short (:func:`_keys_in_text`) is compared with
    the keys parsed (a duplicate collapses two into one). Only when they differ is the
    text parsed again with a check on every object, which names a duplicate if there
    is one. Lone surrogates can be spelled
    only by ``\\u`` escapes, so the parsed strings are searched for them only when the
    text holds such an escape.

    Raises:
        FormatError: duplicate key or non-JSON constant (message without the file name).
        ValueError, RecursionError: invalid or too deeply nested JSON.
    """
    doc = json.loads(text, parse_constant=_no_constant)
    if _keys_in_text(text) != _count_keys(doc):
        del doc  # not held while the text is parsed again
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    try:
        text.encode("utf-8")  # a surrogate in the text itself (a str decoded leniently)
        if _SURROGATE_ESCAPE.search(text) is not None:
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError("a string holds a lone surrogate (\\ud800-\\udfff): not valid Unicode") from None
    return doc


#: A key's closing quote, JSON whitespace, then its colon.
_SPACED_COLON = re.compile(r'"[ \t\n\r]+:')
#: A JSON string token, then (captured) the colon that makes it a key.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"([ \t\n\r]*:)?')
#: Runs of backslashes before a ``":`` longer than this are measured by :data:`_RUN_BEFORE_KEY_END`.
_MAX_RUN = 4
#: A whole run of backslashes before ``":`` (the look-behind starts it at the run's first backslash only, so the
#: scan stays linear).
_RUN_BEFORE_KEY_END = re.compile(r'(?<!\\)(\\+)":')
#: An escape that may spell half of a surrogate pair.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _keys_in_text(text: str) -> int:
    """At least as many as the keys written in valid JSON ``text``; exactly as many when no string value
    starts with a colon.

    Inside a string a quote is always escaped, that is preceded by an odd run of
    backslashes; a key's closing quote by an even run (usually none). So, when no
    whitespace separates a key from its colon, each ``":`` after an even run is a key's
    end or the start of a string value beginning with a colon. They are counted at C
    speed by inclusion and exclusion: every ``":``, minus each ``\\":``, plus each
    ``\\\\":``, and so on. Otherwise the string tokens are matched left to right (in
    valid JSON the scan cannot start inside a string, as every quote outside strings
    opens one) and counted exactly.

    As the count never falls short, a count equal to the keys parsed proves that no
    key was written twice.
    """
    if _SPACED_COLON.search(text) is not None:
        found = _STRING.findall(text)
        return len(found) - found.count("")
    total = keys = text.count('":')
    run, sign = "\\", -1
    while count := text.count(run + '":'):
        if len(run) > _MAX_RUN:  # a long run of backslashes: one linear pass instead of a scan per backslash
            return total - sum(len(m) % 2 for m in _RUN_BEFORE_KEY_END.findall(text))
        keys += sign * count
        run, sign = run + "\\", -sign
    return keys


def _count_keys(doc: Any) -> int:
    """Keys of every object in a parsed JSON document (a loop, not recursion: any depth)."""
    count = 0
    stack = [doc] if type(doc) is dict or type(doc) is list else []
    pop, push = stack.pop, stack.append
    while stack:
        value = pop()
        if value.__class__ is dict:
            count += len(value)
            value = value.values()
        for item in value:
            kind = item.__class__
            if kind is dict or kind is list:
                push(item)
    return count


def _no_constant(name: str) -> Any:
    raise FormatError(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise FormatError(f"duplicate key {key!r} in the header")
            seen.add(key)
    return out


def _is_uint(value: Any) -> bool:
    return type(value) is int and value >= 0


def _entry(path: str, name: str, raw: Any) -> TensorEntry:
    """One validated header entry (the checks run once per tensor: kept to plain loops)."""
    if type(raw) is not dict or raw.keys() != _ENTRY_FIELDS:
        found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise FormatError(f"{path}: tensor {name!r}: expected fields {sorted(_ENTRY_FIELDS)}, found {found}")
    code, shape, offsets = raw["dtype"], raw["shape"], raw["data_offsets"]
    known = CODES.get(code) if type(code) is str else None
    if known is None:
        raise FormatError(f"{path}: tensor {name!r}: unknown dtype {reprlib.repr(code)}; "
                          f"expected one of {sorted(CODES)}")  # fmt: skip
    itemsize = known[1]
    if type(shape) is not list or not all(_is_uint(d) for d in shape):
        raise FormatError(f"{path}: tensor {name!r}: shape must be a list of non-negative integers, "
                          f"found {reprlib.repr(shape)}")  # fmt: skip
    if len(shape) > MAX_DIMS:
        raise FormatError(f"{path}: tensor {name!r}: shape {shape} has more than {MAX_DIMS} dims")
    if type(offsets) is not list or len(offsets) != 2 or not _is_uint(offsets[0]) or not _is_uint(offsets[1]) \
            or offsets[0] > offsets[1]:  # fmt: skip
        raise FormatError(f"{path}: tensor {name!r}: data_offsets must be [BEGIN, END] with 0 <= BEGIN <= END, "
                          f"found {reprlib.repr(offsets)}")  # fmt: skip
    count = nonzero = 1
    for d in shape:  # Python ints cannot overflow: compute exactly, then bound.
        count *= d
        if d:
            nonzero *= d
    if nonzero * itemsize >= 1 << 63:  # NumPy cannot shape it even with a zero dim
        raise FormatError(f"{path}: tensor {name!r}: shape {shape} is too large (2**63 bytes or more)")
    nbytes = count * itemsize
    if nbytes != offsets[1] - offsets[0]:
        raise FormatError(f"{path}: tensor {name!r}: shape {shape} of {code} needs {nbytes} bytes, "
                          f"data_offsets span {offsets[1] - offsets[0]}")  # fmt: skip
    return TensorEntry(name, code, tuple(shape), offsets[0], offsets[1])


#: Bytes of memory one ``"key": value`` pair of header JSON costs once parsed (measured: about 180 for a file
#: of 50,000 tiny tensors); the header is refused before parsing when its pairs would cost more than allowed.
BYTES_PER_PAIR = 128


def parse_header(prefix: bytes, read: Any, file_size: int, path: str, max_bytes: int | None = None) -> Header:
    """Parse and validate a header.

    Args:
        prefix: the file's first 8 bytes (or fewer, if the file is that short).
        read: ``read(n) -> bytes`` returning the next ``n`` bytes after the prefix.
        file_size: the file's size in bytes.
        path: the file's name, for messages.
        max_bytes: memory the parsed header may take (``Limits.allowed``), checked
            before parsing at :data:`BYTES_PER_PAIR` bytes a JSON pair.

    Raises:
        FormatError: any rule in this module's docstring is broken.
        LimitError: the header would take more than ``max_bytes`` once parsed.
    """
    if len(prefix) < 8:
        raise FormatError(f"{path}: file has {len(prefix)} bytes; a safetensors file needs at least 8")
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > MAX_HEADER_SIZE:
        raise FormatError(f"{path}: header length {n} exceeds the limit of {MAX_HEADER_SIZE} bytes")
    if 8 + n > file_size:
        raise FormatError(f"{path}: header length {n} runs past the end of the file ({file_size} bytes)")
    raw = read(n)
    if len(raw) != n:
        raise FormatError(f"{path}: reading the header, expected {n} bytes, got {len(raw)}")
    pairs = raw.count(b'":')  # every key, and every key of the record inside __metadata__
    if max_bytes is not None and pairs * BYTES_PER_PAIR > max_bytes:
        raise LimitError(f"{path}: a header of {pairs} JSON entries would take about {pairs * BYTES_PER_PAIR} bytes "
                         f"once parsed, more than the {max_bytes} this file may use (tensorfile.Limits)")  # fmt: skip
    try:
        doc = strict_json(raw.decode("utf-8"))
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from None
    except RecursionError:
        raise FormatError(f"{path}: header JSON is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{path}: header is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise FormatError(f"{path}: header must be a JSON object, found {type(doc).__name__}")

    has_metadata = METADATA_KEY in doc
    metadata = doc.pop(METADATA_KEY, None)
    if has_metadata:
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise FormatError(f"{path}: __metadata__ must be an object of string to string")

    entries = sorted((_entry(path, name, raw) for name, raw in doc.items()), key=lambda e: (e.begin, e.end))
    data_size = file_size - 8 - n
    position = 0
    for e in entries:
        if e.begin != position:
            what = "overlaps the previous tensor" if e.begin < position else f"leaves a hole at byte {position}"
            raise FormatError(f"{path}: tensor {e.name!r} starts at data byte {e.begin}: {what}")
        position = e.end
    if position != data_size:
        what = "trailing bytes after the last tensor" if position < data_size else "the file is truncated"
        raise FormatError(f"{path}: tensors cover {position} data bytes, the file has {data_size}: {what}")
    return Header({e.name: e for e in entries}, metadata, 8 + n, bytes(raw))


def read_header(fd: int, path: str, limits: Limits) -> tuple[int, Header]:
    """The size and validated header of the file open as ``fd`` (opened with :data:`OPEN_FLAGS`).

    The one way every local reader (:class:`.reader.SafetensorsReader`, ``tensorfile ls``) reads a header:
    the file must be a regular file that does not look like another format, then :func:`parse_header`
    with the memory ``limits`` allow for a file of its size.

    Returns:
        ``(size in bytes, header)``.

    Raises:
        IsADirectoryError: ``fd`` is a folder.
        FormatError: not a regular file; looks like another format (the message says which); or
            :func:`parse_header` refuses the header.
        LimitError: the parsed header would take more memory than ``limits`` allow.
    """
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", path)
    if not stat.S_ISREG(info.st_mode):
        raise FormatError(f"{path}: not a regular file")
    prefix = os.pread(fd, 16, 0)
    kind = looks_like(prefix)
    if kind is not None and prefix[8:9] != b"{":
        raise FormatError(f"{path}: not a safetensors file; it looks like {kind}")
    header = parse_header(prefix[:8], lambda n: os.pread(fd, n, 8), info.st_size, path, limits.allowed(info.st_size))
    return info.st_size, header


def build_header(
    tensors: Sequence[tuple[str, str, Sequence[int], int]], metadata: Mapping[str, str] | None, align: int = HEADER_ALIGN
) -> bytes:
    """Build the length prefix and header for tensors stored in the given order.

    Args:
        tensors: ``(name, code, shape, nbytes)`` per tensor, in data order.
        metadata: ``__metadata__`` (string to string), written first, or None.
        align: pad so the data buffer starts at a multiple of this (16; the
            reference writer's 8 for plain safetensors files).

    Returns:
        ``u64 N`` followed by the N-byte header, space-padded so that the data
        buffer starts at a multiple of 16 bytes.
    """
    doc: dict[str, Any] = {}
    if metadata:
        doc[METADATA_KEY] = dict(metadata)
    offset = 0
    for name, code, shape, nbytes in tensors:
        doc[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-(8 + len(text)) % align)
    return struct.pack("<Q", len(text)) + text
