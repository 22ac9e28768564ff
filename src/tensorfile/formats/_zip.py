"""Zip archives (``.npz``, torch ``.pt``, ``.keras``) checked before anything is read from them.

Reference: PKWARE APPNOTE.TXT 6.3.10 (4.3.7 local file header, 4.3.9 data
descriptor, 4.3.12 central directory header, 4.5.3 Zip64 extra field); CPython
``Lib/zipfile``, which reads the central directory and trusts it.

Readers disagree where a zip disagrees with itself (torch's miniz reads the
first of two members of one name, ``zipfile`` the last), so :func:`check_zip`
refuses every such file before a byte of a member is read:

- no member name twice, no NUL in a name;
- no encrypted member; only stored (0) and deflated (8) members;
- each member's local header is at its offset, with the signature ``PK\\x03\\x04``,
  the central directory's name bytes and compression method, and (unless bit 3
  says a data descriptor follows) its CRC-32 and sizes (Zip64 sizes from the
  local Zip64 extra field);
- a stored member's compressed size equals its size;
- each member's data ends before the central directory, and no two members
  (local header to end of data) overlap: one byte range, one member;
- a deflated member claims at most ``Limits.max_expansion`` times its
  compressed size, and so do all of them together (a zip bomb is refused
  before it inflates).

:func:`fill`, :func:`read_member_into` and :func:`member_array` then read a
member into one preallocated buffer, charged to the file's :class:`Budget`
first; zip damage becomes :class:`FormatError` (:class:`IntegrityError` for a
bad CRC-32).
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import zipfile
import zlib
from typing import IO, Any, Iterator

import numpy as np
from isal.isal_zlib import crc32

from ..errors import FormatError, IntegrityError, LimitError, TensorFileError
from ..format.memory import empty_bytes
from ..limits import DEFAULT_LIMITS, Budget

__all__ = ["FileRange", "StoredMember", "open_zip", "check_zip", "data_start", "fill", "read_member_into", "read_member_range",
           "member_array", "check_expansion", "zip_errors", "READ_CHUNK"]  # fmt: skip

#: Bytes read from a compressed member at a time (the only transient copy).
READ_CHUNK = 1 << 20
_LOCAL = struct.Struct("<4s2B4HL2L2H")  # APPNOTE 4.3.7: signature ... name length, extra length
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
_MAX32 = 0xFFFFFFFF
#: What zipfile (and zlib under it) raises for a damaged archive.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, zlib.error, EOFError,
               OSError, ValueError, struct.error, OverflowError)  # fmt: skip


#: Bytes ``zipfile`` holds per member once it has read the central directory (a ZipInfo and its name), charged first.
MEMBER_BYTES = 512
_EOCD = struct.Struct("<4s4H2LH")  # APPNOTE 4.3.16: signature, disk numbers, entries here, entries, size, offset, comment
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # 4.3.15: signature, disk, offset of the Zip64 end record, disks
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")  # 4.3.14: ..., entries here, entries, size, offset


class FileRange(io.RawIOBase):
    """Bytes ``start`` to ``start + length`` of an open file, as a read-only seekable file of its own (an archive
    stored inside another file, such as a DCP ``.distcp`` item), read with ``pread``: the descriptor's position
    is never used. It has no ``fileno`` (positions in it are not positions in the file); the caller closes ``fd``.
    """

    def __init__(self, fd: int, start: int, length: int) -> None:
        super().__init__()
        self._fd, self._start, self._length, self._pos = fd, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        if base + offset < 0:
            raise ValueError(f"seek to byte {base + offset}, before the start")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self._length - self._pos))
        got = os.preadv(self._fd, [view[:n]], self._start + self._pos) if n else 0
        self._pos += got
        return got


class StoredMember(FileRange):
    """A stored (not compressed) member of an archive on disk, read straight from the file with ``preadv``
    (no copy through zipfile's buffers), at most :data:`READ_CHUNK` bytes per read, its CRC-32 computed over
    each piece as it is read (while the piece is in the CPU's cache) and checked once the last byte is read.

    Read it from start to end without seeking (as :func:`fill` and :func:`drain` do); threads may each read
    their own member of one descriptor (``preadv`` keeps no position). APPNOTE.TXT 4.4.7 (CRC-32 of the
    member's uncompressed bytes); ``start`` is where :func:`check_zip` found its data.

    Raises (from a read):
        IntegrityError: the CRC-32 of the member's bytes differs from the central directory's.
    """

    def __init__(self, fd: int, start: int, info: zipfile.ZipInfo, what: str) -> None:
        super().__init__(fd, start, info.file_size)
        self._crc, self._expected, self._what = 0, info.CRC, what

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        raise io.UnsupportedOperation("a stored member is read in order (its CRC-32 is computed as it is read)")

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")[:READ_CHUNK]
        got = super().readinto(view)
        if got:
            self._crc = crc32(view[:got], self._crc)  # ISA-L's; releases the GIL
            if self._pos == self._length and self._crc != self._expected:
                raise IntegrityError(f"{self._what}: bad CRC-32: {self._crc:#010x} of its bytes, "
                                     f"{self._expected:#010x} in the archive")  # fmt: skip
        elif self._pos < self._length:
            raise FormatError(f"{self._what}: the file ended at byte {self._start + self._pos} of the member")
        return got


def member_count(path: str) -> int | None:
    """How many members the archive's end-of-central-directory record announces (Zip64 included), read from the
    file's last 64 KiB without parsing the directory; None when there is no such record."""
    with open(path, "rb") as f:
        size = f.seek(0, io.SEEK_END)
        start = max(0, size - (1 << 16) - _EOCD.size)
        f.seek(start)
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or at + _EOCD.size > len(tail):
            return None
        entries = _EOCD.unpack_from(tail, at)[4]
        if entries != 0xFFFF or at < _ZIP64_LOCATOR.size:
            return entries
        signature, _, offset, _ = _ZIP64_LOCATOR.unpack_from(tail, at - _ZIP64_LOCATOR.size)
        if signature != b"PK\x06\x07" or offset + _ZIP64_EOCD.size > size:
            return entries
        f.seek(offset)
        record = f.read(_ZIP64_EOCD.size)
        return _ZIP64_EOCD.unpack(record)[6] if record[:4] == b"PK\x06\x06" else entries


def open_zip(path: str, budget: Budget) -> zipfile.ZipFile:
    """Open ``path`` as a zip archive and :func:`check_zip` it; the caller closes it.

    The members the archive announces are charged to the budget (:data:`MEMBER_BYTES` each) before
    ``zipfile`` reads its central directory.

    Raises:
        OSError: the file cannot be opened (missing, a folder, no permission).
        FormatError: not a zip archive, or one :func:`check_zip` refuses.
        LimitError: a zip bomb, or more members than the budget holds.
    """
    count = member_count(path)  # a missing or unreadable file keeps its own OSError
    if count is not None:
        if count > budget.limits.max_tensors:
            raise LimitError(f"{path}: {count} members, more than {budget.limits.max_tensors} (Limits.max_tensors)")
        budget.charge(count * MEMBER_BYTES, f"the central directory of {count} members")
    try:
        zf = zipfile.ZipFile(path)
    except _ZIP_ERRORS as exc:
        raise FormatError(f"{path}: not a readable zip archive ({exc})") from None
    try:
        check_zip(path, zf, budget)
    except BaseException:
        zf.close()
        raise
    return zf


def check_zip(path: str, zf: zipfile.ZipFile, budget: Budget) -> dict[str, int]:
    """Check an open archive against the rules in this module's docstring (reads only headers).

    Returns:
        Where each member's data starts in the file, by member name.

    Raises:
        FormatError: the archive disagrees with itself, or holds what is refused; the message names the member.
        LimitError: a compressed member, or all of them, would inflate more than ``Limits.max_expansion`` times.
    """
    fp = zf.fp
    if fp is None:
        raise ValueError("check_zip needs an open archive")
    size = _size(fp)
    end_of_data = min(getattr(zf, "start_dir", size), size)
    seen: set[str] = set()
    extents: list[tuple[int, int, str]] = []
    compressed = inflated = 0
    offsets: dict[str, int] = {}
    for info in zf.infolist():
        member = f"member {info.filename!r}"
        what = f"{path}: {member}"
        if "\x00" in info.orig_filename:
            raise FormatError(f"{what}: a NUL character in a member name")
        if info.filename in seen:
            raise FormatError(f"{what} appears twice in the archive (zip readers disagree on which one they read)")
        seen.add(info.filename)
        if info.flag_bits & 0x1:
            raise FormatError(f"{what} is encrypted; tensorfile does not read encrypted zip members")
        if info.compress_type not in _METHODS:
            raise FormatError(f"{what}: compression method {info.compress_type} (only stored and deflated are read)")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise FormatError(f"{what}: stored, but {info.compress_size} bytes in the archive for {info.file_size}")
        start = offsets[info.filename] = _check_local_header(fp, info, what)
        if start + info.compress_size > end_of_data:
            raise FormatError(
                f"{what}: {info.compress_size} bytes at byte {start} run past the start of the central directory "
                f"(byte {end_of_data}) in the {size}-byte file"
            )
        extents.append((info.header_offset, start + info.compress_size, info.filename))
        if info.compress_type != zipfile.ZIP_STORED:
            budget.check_expansion(info.compress_size, info.file_size, member)
            compressed += info.compress_size
            inflated += info.file_size
    if compressed:
        budget.check_expansion(compressed, inflated, "the compressed members together")
    extents.sort()
    for (_, end, name), (begin, _, other) in zip(extents, extents[1:]):
        if begin < end:
            raise FormatError(f"{path}: members {name!r} and {other!r} overlap (bytes {begin} to {end})")
    return offsets


def data_start(zf: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> int:
    """Where member ``info``'s data starts in the archive's file, once its local header agrees with the central
    directory (as :func:`check_zip` checks it).

    Raises:
        FormatError: no such local header, or one that disagrees.
    """
    if zf.fp is None:
        raise ValueError("data_start needs an open archive")
    return _check_local_header(zf.fp, info, what)


def _size(fp: IO[bytes]) -> int:
    try:
        return os.fstat(fp.fileno()).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        return fp.seek(0, io.SEEK_END)


def _pread(fp: IO[bytes], n: int, offset: int) -> bytes:
    try:
        fd = fp.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        fp.seek(offset)
        return fp.read(n)
    return os.pread(fd, n, offset)


def _check_local_header(fp: IO[bytes], info: zipfile.ZipInfo, what: str) -> int:
    """Where member ``info``'s data starts, once its local header agrees with the central directory."""
    offset = info.header_offset
    raw = _pread(fp, _LOCAL.size, offset) if offset >= 0 else b""
    if len(raw) != _LOCAL.size or raw[:4] != b"PK\x03\x04":
        raise FormatError(f"{what}: no local file header at byte {offset}")
    _, _, _, flags, method, _, _, crc, csize, usize, name_length, extra_length = _LOCAL.unpack(raw)
    name = _pread(fp, name_length, offset + _LOCAL.size)
    try:
        central = info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
    except UnicodeEncodeError:
        central = info.orig_filename.encode("utf-8", "surrogateescape")
    if name != central:
        raise FormatError(f"{what}: its local header names {name[:200]!r}")
    if flags & 0x1:
        raise FormatError(f"{what} is encrypted; tensorfile does not read encrypted zip members")
    if method != info.compress_type:
        raise FormatError(f"{what}: compression method {method} in its local header, {info.compress_type} in the "
                          "central directory")  # fmt: skip
    extra = _pread(fp, extra_length, offset + _LOCAL.size + name_length)
    if len(extra) != extra_length:
        raise FormatError(f"{what}: its local header runs past the end of the file")
    if not flags & 0x8:  # no data descriptor: the local header holds the CRC-32 and sizes
        if crc != info.CRC:
            raise FormatError(
                f"{what}: CRC-32 {crc:#010x} in its local header, {info.CRC:#010x} in the central directory"
            )
        if _local_sizes(extra, usize, csize) != (info.file_size, info.compress_size):
            raise FormatError(
                f"{what}: sizes {csize}/{usize} (compressed/inflated) in its local header, "
                f"{info.compress_size}/{info.file_size} in the central directory"
            )
    return offset + _LOCAL.size + name_length + extra_length


def _local_sizes(extra: bytes, usize: int, csize: int) -> tuple[int, int]:
    """The (inflated, compressed) sizes a local header gives, read from its Zip64 extra field (APPNOTE 4.5.3)
    where a size is 0xFFFFFFFF. The local field holds both sizes; a writer that put only the large one is read too."""
    if _MAX32 not in (usize, csize):
        return usize, csize
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + length]
        pos += 4 + length
        if tag == 0x0001:
            values = [v for (v,) in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
            if len(values) >= 2:
                big_u, big_c = values[0], values[1]
            else:  # only the one size that is 0xFFFFFFFF
                big_u = big_c = values[0] if values else -1
            return (big_u if usize == _MAX32 else usize), (big_c if csize == _MAX32 else csize)
    return usize, csize


def fill(stream: IO[bytes], out: memoryview, what: str) -> None:
    """Read exactly ``len(out)`` bytes of ``stream`` into ``out`` (a writable byte view): no copy of the whole.

    A real file or a :class:`StoredMember` is read straight into ``out``; anything else (a zip member
    through zipfile) in pieces of :data:`READ_CHUNK` bytes.

    Raises:
        FormatError: the stream ends first ("expected N bytes, got M").
    """
    total, done = len(out), 0
    direct = isinstance(stream, (io.BufferedReader, io.FileIO, StoredMember))
    while done < total:
        if direct:
            got = stream.readinto(out[done:]) or 0
        else:
            piece = stream.read(min(READ_CHUNK, total - done))
            got = len(piece)
            out[done : done + got] = piece
        if not got:
            raise FormatError(f"{what}: expected {total} bytes of data, got {done}")
        done += got


def read_member_into(zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: memoryview, what: str | None = None) -> None:
    """Read member ``info`` (stored or deflated; its CRC-32 checked) into ``out``, a writable byte view of its size.

    ``what`` names it in errors (default: the archive's file name and the member's name).

    Raises:
        FormatError: damaged or short; IntegrityError: a bad CRC-32.
    """
    what = what or f"{zf.filename}: member {info.filename!r}"
    if len(out) != info.file_size:
        raise ValueError(f"{what}: a {len(out)}-byte buffer for a {info.file_size}-byte member")
    with zip_errors(what), zf.open(info) as member:
        fill(member, out, what)
        drain(member, what)


def read_member_range(zf: zipfile.ZipFile, info: zipfile.ZipInfo, begin: int, out: memoryview, what: str) -> None:
    """Read bytes ``begin`` to ``begin + len(out)`` of member ``info`` (inflated) into ``out``.

    The member is read through to its end in pieces of :data:`READ_CHUNK` bytes (only the range is
    kept), so that its CRC-32 is checked as :func:`read_member_into` checks it.

    Raises:
        FormatError: damaged, or shorter than the range; IntegrityError: a bad CRC-32.
    """
    with zip_errors(what), zf.open(info) as member:
        skipped = 0
        while skipped < begin:
            got = len(member.read(min(READ_CHUNK, begin - skipped)))
            if not got:
                raise FormatError(f"{what}: expected {begin + len(out)} bytes of data, got {skipped}")
            skipped += got
        fill(member, out, what)
        drain(member, what)


def member_array(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: Budget, what: str) -> np.ndarray:
    """Member ``info``'s bytes in a new writable ``uint8`` array, charged to ``budget`` before it is allocated.

    ``what`` names the member (e.g. ``"storage '3'"``); errors name ``budget.path`` too.

    Raises:
        LimitError: over the budget; FormatError, IntegrityError: as :func:`read_member_into`.
    """
    budget.charge(info.file_size, what)
    data = empty_bytes(info.file_size)
    read_member_into(zf, info, memoryview(data), f"{budget.path}: {what}")
    return data


def drain(member: IO[bytes], what: str) -> None:
    """Read what is left of a member, in pieces, so that zipfile checks its CRC-32 (nothing is kept)."""
    while member.read(READ_CHUNK):
        pass


@contextlib.contextmanager
def zip_errors(what: str) -> Iterator[None]:
    """Turn the zip module's errors while reading a member into FormatError (IntegrityError for a bad CRC-32)."""
    try:
        yield
    except TensorFileError:
        raise
    except zipfile.BadZipFile as exc:
        raise (IntegrityError if "CRC" in str(exc) else FormatError)(f"{what}: {exc}") from None
    except _ZIP_ERRORS as exc:
        raise FormatError(f"{what}: cannot be read ({exc})") from None


def check_expansion(path: str, zf: zipfile.ZipFile, budget: Budget | None = None) -> None:
    """Refuse a zip bomb before inflating anything: each compressed member, and all together, may claim at most
    ``Limits.max_expansion`` times their compressed size (kept for callers not yet on :func:`check_zip`).

    Raises:
        LimitError: a likely zip bomb.
    """
    budget = budget or DEFAULT_LIMITS.budget(path, os.path.getsize(path))
    compressed = inflated = 0
    for info in zf.infolist():
        if info.compress_type != zipfile.ZIP_STORED:
            budget.check_expansion(info.compress_size, info.file_size, f"member {info.filename!r}")
            compressed += info.compress_size
            inflated += info.file_size
    if compressed:
        budget.check_expansion(compressed, inflated, "the compressed members together")
