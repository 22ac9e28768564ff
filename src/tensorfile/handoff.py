"""Handing NumPy arrays to a framework: which one a tensor goes to, and naming the tensor when it cannot.

The one rule, for every kind of file (``docs/FORMAT.md``, "Which framework a load returns"): a tensor goes to
the framework the caller asks for (``framework=``); else to the one its file records (a tensorfile record, or
torch / MXNet for their own files) when that framework is installed (imported on first need); else to NumPy,
with one warning per file that names the framework missing. ``framework="numpy"`` asks for NumPy outright.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import UnsupportedTypeError
from .format.dtypes import code_of
from .frameworks import FRAMEWORKS, Adapter, get_adapter
from .tree import map_leaves

__all__ = ["check_framework", "pick_adapter", "to_framework", "imported", "installed", "source_framework", "convert_tree",
           "on_device"]  # fmt: skip


def check_framework(framework: str | None) -> None:
    """Refuse a ``framework=`` that is not one of :data:`tensorfile.frameworks.FRAMEWORKS` (ValueError)."""
    if framework is not None and framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; expected one of {sorted(FRAMEWORKS)}")


def pick_adapter(framework: str | None, recorded: str | None, path: str) -> Adapter:
    """The adapter asked for, else the recorded framework's when it is installed, else NumPy's (with a warning).

    Raises:
        ImportError: ``framework`` names a framework that is not installed.
    """
    if framework is not None:
        try:
            return get_adapter(framework)
        except ImportError as exc:
            raise ImportError(f"{path}: {exc}; or pass framework='numpy'") from exc
    return get_adapter(source_framework(recorded or "numpy", path))


def to_framework(adapter: Adapter, path: str, name: str, array: np.ndarray, info: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
    """``adapter.from_numpy``, with the file and tensor named when the framework cannot hold it (strings,
    datetimes and other NumPy-only dtypes of another tool's file reach a framework only as NumPy arrays)."""
    try:
        if adapter.name != "numpy":
            code_of(array.dtype, f"tensor {name!r}")
        return adapter.from_numpy(array, info, options)
    except UnsupportedTypeError as exc:
        raise UnsupportedTypeError(f"{path}: tensor {name!r}: {exc}") from None


def imported(name: str) -> bool:
    """True when the process has imported framework ``name`` (NumPy always)."""
    return name == "numpy" or any(getattr(sys.modules.get(package), "__file__", None) is not None
                                  for package in FRAMEWORKS[name][1])  # (a namespace package has no file)


def installed(name: str) -> bool:
    """True when framework ``name`` is imported or can be (its package is found; nothing is imported here)."""
    return imported(name) or _found(FRAMEWORKS[name][1][0])


@functools.lru_cache(maxsize=None)
def _found(package: str) -> bool:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # ValueError: sys.modules holds None for it (blocked)
        return False
    return spec is not None and spec.origin not in (None, "namespace")  # a folder of that name is not the framework


def source_framework(recorded: str, path: str) -> str:
    """Where a file's tensors go when the caller names no framework: ``recorded`` when it is installed, else
    ``"numpy"`` with one warning naming what is missing (also for a framework this tensorfile does not know)."""
    if recorded == "numpy":
        return recorded
    if recorded in FRAMEWORKS and installed(recorded):
        try:
            get_adapter(recorded)
            return recorded
        except ImportError as exc:  # found but broken (an MXNet beside NumPy >= 1.24, say)
            why = f"cannot be imported ({short_error(exc)})"
    else:
        why = "is not installed" if recorded in FRAMEWORKS else "is not one tensorfile knows"
    warnings.warn(f"{path}: tensors saved from {recorded}, which {why}: loaded as NumPy arrays "
                  "(framework='numpy' asks for NumPy without this warning)", stacklevel=_user_level())  # fmt: skip
    return "numpy"


def _user_level() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside tensorfile."""
    package, frame, level = os.path.dirname(os.path.abspath(__file__)), sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def short_error(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def convert_tree(value: Any, adapter: Adapter, path: str, options: Mapping[str, Any], max_depth: int) -> Any:
    """Hand a foreign file's NumPy arrays to ``adapter``'s framework, containers kept (and shared ones shared)."""
    from .formats.torch import Parameter

    def convert(array: np.ndarray) -> Any:
        record = {"parameter": True, "requires_grad": bool(array.requires_grad)} if isinstance(array, Parameter) else {}
        return to_framework(adapter, path, "tensor", np.asarray(array), record, options)

    return map_leaves(value, lambda node: isinstance(node, np.ndarray), convert, max_depth=max_depth, what=path)


def on_device(reader: Any, entries: Sequence[Any], infos: Mapping[str, Mapping[str, Any]], framework: str | None,
              options: Mapping[str, Any], verify: Callable[[str, str, str, str | None], None] | None,
              ) -> dict[str, Any]:  # fmt: skip
    """torch tensors of ``entries`` bound for an accelerator, loaded onto it through pinned buffers, the read
    overlapped with the copy (:func:`tensorfile.frameworks.torch_device.load_streamed`, which takes the same
    arguments); ``{}`` without importing torch when none is (another framework, every tensor for the host)."""
    if framework not in (None, "torch") or not entries:
        return {}
    if options.get("map_location") is None and options.get("device") is None and not any(
            "device" in infos.get(e.name, ()) for e in entries):  # fmt: skip
        return {}  # every tensor goes back to the host
    if framework is None:
        entries = [e for e in entries if infos.get(e.name, {}).get("framework") == "torch"]
        if not entries or not installed("torch"):
            return {}
    from .frameworks import torch_device

    return torch_device.load_streamed(reader, entries, infos, options, verify)
