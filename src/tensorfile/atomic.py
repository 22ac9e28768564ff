"""Atomic replacement of a file: all of the new content, or the old file untouched.

Protocol: create a uniquely named temporary file in the target's folder
(``.<name>.tmp-<random>``), write it, ``fsync`` it, ``os.replace`` it over the
target, then ``fsync`` the folder so the rename itself is durable. On any error
the temporary is removed and the target is left as it was. A process killed
mid-write leaves at most a stray hidden temporary, never a truncated target.

Leftover temporaries are removed by the next save to the same path, and only
those of dead writers: a writer holds an exclusive ``flock`` on its temporary from
creation to rename, so a temporary that can be locked, and is older than
:data:`STALE_AFTER` seconds (the instant between a writer's create and its lock),
has no writer left (ai2cm/ace#1165: each ``kill -9`` left up to a file's size).

A symlink is followed (the file it points to is replaced, as ``open`` would
write it); an existing file keeps its permission bits; a target that exists but
is not a regular file (a folder, a device, a FIFO) is refused.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import os
import secrets
import stat
import time
from typing import Any, BinaryIO, Iterator

__all__ = ["atomic_write", "fsync_dir", "remove_stale_temporaries", "TEMP_MARK", "STALE_AFTER"]

#: Part of every temporary file's name, so leftovers can be recognized.
TEMP_MARK = ".tmp-"
_NAME_MAX = 255
_RANDOM_HEX = 12
#: A leftover temporary younger than this (seconds since its last change) is never removed.
STALE_AFTER = 10.0


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """``fsync`` a folder so that renames inside it survive a power loss."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _target(path: str) -> tuple[str, int | None]:
    """The real file to replace and its permission bits (None if it does not exist)."""
    if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)):
        raise IsADirectoryError(errno.EISDIR, "a file name is needed, not a folder", path)
    real = os.path.realpath(path)
    try:
        info = os.stat(real)
    except FileNotFoundError:
        return real, None
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder", path)
    if not stat.S_ISREG(info.st_mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a regular file; refusing to replace it", path)
    return real, stat.S_IMODE(info.st_mode)


def _temp_prefix(real: str) -> str:
    """``.<name>.tmp-``, the name cut so that the random part still fits in a file name."""
    stem = os.path.basename(real).encode("utf-8", "surrogateescape")[: _NAME_MAX - 1 - len(TEMP_MARK) - _RANDOM_HEX]
    return "." + stem.decode("utf-8", "ignore") + TEMP_MARK


def _temp_name(real: str) -> str:
    return os.path.join(os.path.dirname(real), _temp_prefix(real) + secrets.token_hex(_RANDOM_HEX // 2))


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[str]:
    """Remove the temporaries that dead writers left beside ``path``; returns their names.

    A candidate is named ``.<name>.tmp-<12 hex digits>``, is a regular file reached
    without a link, is older than :data:`STALE_AFTER` and can be ``flock``-ed (its
    writer, which held the lock, is gone). Anything else is left alone.
    """
    try:
        import fcntl
    except ImportError:  # no flock: leftovers stay (not Linux or macOS)
        return []
    real = os.path.realpath(os.fspath(path))
    folder = os.path.dirname(real)
    prefix = _temp_prefix(real)
    removed = []
    try:
        entries = [e.name for e in os.scandir(folder) if e.name.startswith(prefix)]
    except OSError:
        return []
    for name in entries:
        tail = name[len(prefix) :]
        if len(tail) != _RANDOM_HEX or any(c not in "0123456789abcdef" for c in tail):
            continue
        candidate = os.path.join(folder, name)
        try:
            fd = os.open(candidate, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                         | getattr(os, "O_CLOEXEC", 0))  # fmt: skip
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or time.time() - info.st_mtime < STALE_AFTER:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its writer is alive
            now = os.stat(candidate, follow_symlinks=False)
            if (now.st_dev, now.st_ino) == (info.st_dev, info.st_ino):  # still the file we locked
                os.unlink(candidate)
                removed.append(name)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def _drop_cached(path: str) -> None:
    """Ask the kernel to drop the clean cached pages of the file about to be replaced.

    Its replacement is written while it still exists; with its pages cached, the new
    file needs fresh page-cache memory and the write stalls on reclaim (4.3 s instead
    of 1.6 s to replace a cached 1.3 GiB file here). Dropping clean pages loses
    nothing: the old file stays whole on disk, readable, until the rename.
    """
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return
    try:
        advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


#: Bytes written between two requests to start writeback (see :class:`_EarlyWriteback`).
WRITEBACK_EVERY = 32 << 20


@functools.lru_cache(maxsize=1)
def _sync_file_range() -> Any:
    """libc's ``sync_file_range`` (Linux), or None where there is none."""
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
        fn.argtypes = (ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint)
        return fn
    except (ImportError, OSError, AttributeError):
        return None


class _EarlyWriteback(io.FileIO):
    """An unbuffered file that asks the kernel to start writing back what was written, every
    :data:`WRITEBACK_EVERY` bytes (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``: it starts the writes and
    returns; it promises nothing). The disk then works while the writer still computes, and the final
    ``fsync`` (which alone makes the file durable) waits only for the tail: replacing a 256 MiB file took
    0.13 s instead of 0.22 s here."""

    _since = 0

    def write(self, data: Any) -> int:  # type: ignore[override]
        n = super().write(data)
        self._since += n or 0
        if self._since >= WRITEBACK_EVERY:
            self._since = 0
            start = _sync_file_range()
            if start is not None:
                start(self.fileno(), 0, 0, 2)  # SYNC_FILE_RANGE_WRITE, the whole file: pages under way are skipped
        return n


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file that replaces ``path`` when the block exits cleanly.

    The file is unbuffered (``buffering=0``): large writes go straight to the
    kernel. A new file's permissions follow the umask, as for a plain
    ``open(path, "wb")``; a replaced file keeps its own.

    Args:
        path: the file to create or replace.
        durable: ``fsync`` the file and its folder (default). Turn off only for
            scratch files.

    Raises:
        IsADirectoryError: ``path`` is a folder or ends with a separator.
        FileExistsError: ``path`` exists and is not a regular file.
        OSError: the folder does not exist or a write fails (the target is untouched).
    """
    real, mode = _target(os.fspath(path))
    temp = _temp_name(real)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:  # name the file asked for, not the temporary
        folder = os.path.dirname(real) or "."
        why = "no such folder" if isinstance(exc, FileNotFoundError) else exc.strerror or str(exc)
        error = type(exc)(f"{os.fspath(path)}: cannot write in {folder}: {why}")
        error.errno = exc.errno
        raise error from None
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until the rename: this temporary has a live writer
    except (ImportError, OSError):
        pass
    remove_stale_temporaries(real)
    if mode is not None:
        _drop_cached(real)
    try:
        with (_EarlyWriteback(fd, "wb") if durable else open(fd, "wb", buffering=0)) as f:
            if mode is not None:
                os.fchmod(fd, mode)
            yield f  # type: ignore[misc]
            if durable:
                os.fsync(f.fileno())
        os.replace(temp, real)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if durable:
        fsync_dir(os.path.dirname(real))
