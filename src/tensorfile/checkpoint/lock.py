"""One manager per checkpoint folder: an exclusive ``flock`` on ``<folder>/.lock``."""

from __future__ import annotations

import errno
import os
import time

from ..errors import CheckpointLockedError

__all__ = ["FolderLock"]


class FolderLock:
    """Hold ``<directory>/.lock`` exclusively (released on close or process exit).

    Args:
        timeout: seconds to wait for another holder (0: fail at once).

    Raises:
        CheckpointLockedError: another process holds it past ``timeout``.
    """

    def __init__(self, directory: str, timeout: float = 0.0) -> None:
        import fcntl

        self.path = os.path.join(directory, ".lock")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    os.close(self._fd)
                    raise CheckpointLockedError(
                        f"{directory}: another CheckpointManager (in this or another process) is using this folder; "
                        "close it first, or pass lock_timeout= to wait"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1
