"""The background thread of an asynchronous :class:`~tensorfile.CheckpointManager`: one per manager, started by
its first async save and reused by later ones, so that a save's stall does not include starting a thread
(which waits for the new thread to be scheduled: 0.1 to 2 ms, more on a busy machine). It ends after
:data:`IDLE_SECONDS` without work (a manager dropped without ``close()`` leaves no thread behind for long), at
``close()``, and is started again when needed (also in a process forked from the one that started it)."""

from __future__ import annotations

import os
import queue
import threading
from typing import Callable

__all__ = ["Writer", "Job", "IDLE_SECONDS"]

#: seconds the thread waits for the next write before it ends
IDLE_SECONDS = 300.0


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
        self._lock = threading.Lock()  # a submit and the thread ending when idle
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def submit(self, run: Callable[[], None], name: str) -> Job:
        """Queue ``run`` (which must catch its own errors); starts the thread if none runs."""
        job = Job(run, name)
        with self._lock:
            if self._pid != os.getpid():  # forked: the thread stayed in the parent
                self._jobs, self._thread, self._pid = queue.SimpleQueue(), None, os.getpid()
            self._jobs.put(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, args=(self._jobs,), daemon=True, name=self._name)
                self._thread.start()
        return job

    def _loop(self, jobs: "queue.SimpleQueue[Job | None]") -> None:
        me = threading.current_thread()
        while True:
            try:
                job = jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if jobs.empty():
                        if self._thread is me:
                            self._thread = None
                        return
                continue
            if job is None:
                return
            me.name = job.name
            try:
                job.run()
            finally:
                # Drop what the job holds (its snapshot: framework tensors) here, before anyone is told it
                # ended: a daemon thread freeing torch tensors while the interpreter exits aborts the process
                # ("terminate called without an active exception", pytorch/pytorch#38228).
                job.run = _ended
                me.name = self._name
                job._done.set()
                job = None

    def stop(self) -> None:
        """End the thread once the queued jobs have run, and return when it has ended (so that no thread of ours
        runs framework code while the interpreter exits); from the thread itself or a forked child, at once."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._jobs.put(None)
        if thread is not None and thread is not threading.current_thread() and self._pid == os.getpid():
            thread.join()


def _ended() -> None:
    """What an ended :class:`Job` runs: nothing (its own callable is dropped once it has run)."""
