"""Atomic replacement of a file: all of the new content, or the old file untouched.

Protocol: create a uniquely named temporary file in the target's folder
(``.<name>.tmp-<random>``), write it, ``fsync`` it, ``os.replace`` it over the
target, then ``fsync`` the folder so the rename itself is durable. On any error
the temporary is removed and the target is left as it was. A process killed
mid-write leaves at most a stray temporary, never a truncated target.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import BinaryIO, Iterator

__all__ = ["atomic_write", "fsync_dir", "TEMP_MARK"]

#: Part of every temporary file's name, so leftovers can be recognized.
TEMP_MARK = ".tmp-"


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """``fsync`` a folder so that renames inside it survive a power loss."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file that replaces ``path`` when the block exits cleanly.

    The file is unbuffered (``buffering=0``): large writes go straight to the
    kernel. Permissions follow the umask, as for a plain ``open(path, "wb")``.

    Args:
        path: the file to create or replace.
        durable: ``fsync`` the file and its folder (default). Turn off only for
            scratch files.

    Raises:
        OSError: the folder does not exist or a write fails (the target is untouched).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    temp = os.path.join(folder, f".{os.path.basename(path)}{TEMP_MARK}{secrets.token_hex(6)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with open(fd, "wb", buffering=0) as f:
            yield f  # type: ignore[misc]
            if durable:
                os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if durable:
        fsync_dir(folder)
