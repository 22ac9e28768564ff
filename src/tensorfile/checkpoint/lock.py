"""One manager per checkpoint folder: an exclusive ``flock`` on ``<folder>/.lock``.

The lock file is opened without following a symbolic link (``O_NOFOLLOW``: a folder
unpacked from a tarball or on a shared disk may hold a link to any file, which must not
be truncated) and must be a regular file. Once locked, it records its holder as one line
of JSON: ``{"pid": N, "host": "...", "since": "ISO 8601 UTC"}``, which the error of a
second manager quotes.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import socket
import stat
import time

from ..errors import CheckpointLockedError

__all__ = ["FolderLock", "holder"]

_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def holder(path: str) -> str:
    """Who holds the lock at ``path``, in words (empty when unknown)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        return ""
    finally:
        os.close(fd)
    if not isinstance(info, dict):
        return ""
    return f"PID {info.get('pid', '?')} on host {info.get('host', '?')}, since {info.get('since', '?')}"


class FolderLock:
    """Hold ``<directory>/.lock`` exclusively (released on close or process exit).

    Args:
        timeout: seconds to wait for another holder (0: fail at once).

    Raises:
        CheckpointLockedError: another process holds it past ``timeout`` (the message
            names the holder), or ``.lock`` is a symbolic link or not a regular file.
    """

    def __init__(self, directory: str, timeout: float = 0.0) -> None:
        import fcntl

        self.path = os.path.join(directory, ".lock")
        try:
            self._fd = os.open(self.path, _FLAGS, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise CheckpointLockedError(f"{self.path} is a symbolic link; tensorfile does not follow it (it would "
                                            "write to the file it names): remove it") from None  # fmt: skip
            raise
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            os.close(self._fd)
            raise CheckpointLockedError(f"{self.path} is not a regular file: remove it")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    os.close(self._fd)
                    who = holder(self.path)
                    raise CheckpointLockedError(
                        f"{directory}: another CheckpointManager is using this folder"
                        + (f" ({who})" if who else "")
                        + "; close it first, or pass lock_timeout= to wait"
                    ) from None
                time.sleep(0.05)
        since = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}) + "\n"
        os.ftruncate(self._fd, 0)  # ours: locked, a regular file, reached without a link
        os.pwrite(self._fd, record.encode(), 0)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1
