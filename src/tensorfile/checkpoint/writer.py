"""The background thread of an asynchronous :class:`~tensorfile.CheckpointManager`: one per manager, started by
its first async save and reused by every later one, so that a save's stall does not include starting a thread
(which waits for the new thread to be scheduled: 0.1 to 2 ms, more on a busy machine)."""

from __future__ import annotations

import queue
import threading
from typing import Callable

__all__ = ["Writer", "Job"]


class Job:
    """One write handed to the :class:`Writer`; :meth:`join` waits for it to end (it never raises its error:
    the job records its own)."""

    __slots__ = ("run", "name", "_done")

    def __init__(self, run: Callable[[], None], name: str) -> None:
        self.run, self.name, self._done = run, name, threading.Event()

    def join(self) -> None:
        """Wait until the job has ended."""
        self._done.wait()

    def is_alive(self) -> bool:
        """True while the job is queued or running."""
        return not self._done.is_set()


class Writer:
    """A daemon thread running :class:`Job` s one after the other, in the order given."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, run: Callable[[], None], name: str) -> Job:
        """Queue ``run`` (which must catch its own errors); the thread is started by the first call."""
        job = Job(run, name)
        self._jobs.put(job)
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True, name=self._name)
            self._thread.start()
        return job

    def _loop(self) -> None:
        me = threading.current_thread()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            me.name = job.name
            try:
                job.run()
            finally:
                me.name = self._name
                job._done.set()

    def stop(self) -> None:
        """End the thread once the queued jobs have run (returns at once)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None
