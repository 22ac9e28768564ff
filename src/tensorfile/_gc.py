"""Pause Python's cyclic garbage collector while a save or load on the main thread builds many small objects.

A file of 50,000 tiny tensors makes hundreds of thousands of dicts, lists and arrays;
CPython 3.11 runs a full collection every so many allocations and each walks all of
them, which doubled the time of such a save here (3.4 s against 1.8 s,
``docs/PERFORMANCE.md``). Nothing tensorfile builds holds a reference cycle, so no
garbage is kept longer: collection resumes when the outermost call returns.

Only calls on the main thread pause it. The collector is process-wide: a save that an
async ``CheckpointManager`` runs on a background thread must not stop collection for
the training loop meanwhile, and two threads cannot then undo each other's setting.
The setting is read before the pause and restored in a ``finally`` that covers the
pause itself, so an interrupt (Ctrl-C) cannot leave the collector off.
"""

from __future__ import annotations

import functools
import gc
import threading
from typing import Any, Callable, TypeVar

__all__ = ["collector_paused"]

_F = TypeVar("_F", bound=Callable[..., Any])


def collector_paused(fn: _F) -> _F:
    """Decorate ``fn`` to run with the cyclic garbage collector paused when called on the main thread."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return fn(*args, **kwargs)
        enabled = gc.isenabled()  # nested calls see False and leave it to the outermost
        try:
            gc.disable()
            return fn(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return wrapper  # type: ignore[return-value]
