"""Pause Python's cyclic garbage collector while a save or load builds many small objects.

A file of 50,000 tiny tensors makes hundreds of thousands of dicts, lists and arrays;
CPython 3.11 runs a full collection every so many allocations and each walks all of
them, which doubled the time of such a save here (3.4 s against 1.8 s,
``docs/PERFORMANCE.md``). Nothing tensorfile builds holds a reference cycle, so no
garbage is kept longer: collection resumes when the outermost call returns. Calls
nest and may run on several threads at once; the collector is re-enabled only by the
last one to finish, and only if it was enabled when the first one started.
"""

from __future__ import annotations

import functools
import gc
import threading
from typing import Any, Callable, TypeVar

__all__ = ["collector_paused"]

_F = TypeVar("_F", bound=Callable[..., Any])
_lock = threading.Lock()
_depth = 0
_resume = False


def _pause() -> None:
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1


def _unpause() -> None:
    global _depth
    with _lock:
        _depth -= 1
        if _depth == 0 and _resume:
            gc.enable()


def collector_paused(fn: _F) -> _F:
    """Decorate ``fn`` to run with the cyclic garbage collector paused (see the module's docstring)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _pause()
        try:
            return fn(*args, **kwargs)
        finally:
            _unpause()

    return wrapper  # type: ignore[return-value]
