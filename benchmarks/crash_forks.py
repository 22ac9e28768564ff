"""Runs of the crash harness's training example forked from one process that imported torch once.

A fresh Python process of ``examples/train_with_checkpoints.py`` spends about 6 s of CPU before it trains:
importing torch (3 s) and ``torch._dynamo`` (2.4 s, imported by ``torch.optim.Adam``'s constructor). A run that
is going to be killed does not need that: :func:`start` asks multiprocessing's *forkserver* (a process started
once, which imported torch, ``torch._dynamo``, tensorfile and the example) for a fork that runs the example's
``main(argv)``, and returns an object with the parts of :class:`subprocess.Popen` the harness uses. The fork
starts with the imports done and nothing else: no model, no checkpoint folder opened, no thread of tensorfile's.
It is killed with ``SIGKILL`` like any process; what it left on disk is all the next run sees.

Only the torch modes use it (JAX and TensorFlow start threads when imported: forking after that is unsafe).
A fork sees the environment of the moment the forkserver started, and what the forkserver itself prints (a
preload that failed to import) goes to the harness's stderr of that moment, not to the run's.
The harness still runs the run that must finish as a fresh process, so interpreter exit is exercised too.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["start", "MODES"]

#: the example's modes whose runs may be forked
MODES = ("torch", "torch-epochs")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
_PRELOAD = ["torch", "torch._dynamo", "tensorfile", "tensorfile.checkpoint", "train_with_checkpoints", "crash_forks"]
_context: Any = None


def _forkserver() -> Any:
    global _context
    if _context is None:
        for folder in (str(EXAMPLES), str(Path(__file__).resolve().parent)):
            if folder not in sys.path:  # the forkserver starts with this process's sys.path
                sys.path.insert(0, folder)
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(_PRELOAD)
    return _context


def _run(argv: list[str], out: Any, err: Any) -> None:
    """In the fork: stdout and stderr to the harness's pipes, then the example as its ``__main__`` would run it."""
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    out.close()
    err.close()
    import train_with_checkpoints

    train_with_checkpoints.main(argv)
    sys.stdout.flush()


class Forked:
    """A forked run, seen through the parts of :class:`subprocess.Popen` the harness uses (text pipes)."""

    def __init__(self, argv: list[str]) -> None:
        context = _forkserver()
        out_r, out_w = context.Pipe(duplex=False)  # one-way Pipes are os.pipe()s: plain byte streams
        err_r, err_w = context.Pipe(duplex=False)
        # daemon: a run the harness left behind (it raised before the kill) is ended when the harness exits
        self.process = context.Process(target=_run, args=(argv, out_w, err_w), daemon=True)
        self.process.start()
        out_w.close()
        err_w.close()
        self.stdout = os.fdopen(os.dup(out_r.fileno()), "r")
        self.stderr = os.fdopen(os.dup(err_r.fileno()), "r")
        out_r.close()
        err_r.close()
        self._err: list[str] = []
        self._reader = threading.Thread(target=lambda: self._err.append(self.stderr.read()), daemon=True)
        self._reader.start()  # a full stderr pipe must never block the run
        self.pid = self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def poll(self) -> int | None:
        return self.process.exitcode

    def send_signal(self, sig: int) -> None:
        os.kill(self.process.pid, sig)

    def kill(self) -> None:
        self.process.kill()

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(self.stdout.read()), daemon=True)
        reader.start()
        self.process.join(timeout)
        timed_out = self.process.exitcode is None
        if timed_out:
            self.process.kill()
            self.process.join()
        reader.join()  # the pipes reach their end once the run has ended
        self._reader.join()
        self.stdout.close()
        self.stderr.close()
        if timed_out:
            raise TimeoutError(f"the forked run {self.pid} did not end within {timeout} s: {''.join(self._err)[-2000:]}")
        return "".join(out), "".join(self._err)


def start(argv: list[str]) -> Forked:
    """A forked run of ``train_with_checkpoints.main(argv)``."""
    return Forked(argv)
