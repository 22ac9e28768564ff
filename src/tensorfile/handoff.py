"""Handing NumPy arrays to a framework: which one a tensor goes to, and naming the tensor when it cannot.

A tensor goes to the framework the caller asks for (``framework=``), else to the one its file records (a
tensorfile record, or torch / MXNet for their own files) when the program has imported it, else to NumPy:
a file never makes tensorfile import a framework (``docs/SECURITY.md``).
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Mapping

import numpy as np

from .errors import UnsupportedTypeError
from .format.dtypes import code_of
from .frameworks import FRAMEWORKS, Adapter, get_adapter
from .tree import map_leaves

__all__ = ["check_framework", "pick_adapter", "to_framework", "imported", "source_framework", "convert_tree"]


def check_framework(framework: str | None) -> None:
    """Refuse a ``framework=`` that is not one of :data:`tensorfile.frameworks.FRAMEWORKS` (ValueError)."""
    if framework is not None and framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; expected one of {sorted(FRAMEWORKS)}")


def pick_adapter(framework: str | None, recorded: str | None, path: str) -> Adapter:
    """The adapter asked for, else the recorded framework's if the process has imported it, else NumPy's."""
    name = framework or recorded or "numpy"
    if framework is None and name in FRAMEWORKS and not imported(name):
        name = "numpy"  # a file never makes tensorfile import a framework (hundreds of MiB, process-wide)
    if name not in FRAMEWORKS:
        warnings.warn(
            f"{path}: tensors saved from framework {name!r}, which this tensorfile does not know; loading as NumPy",
            stacklevel=3,
        )
        name = "numpy"
    try:
        return get_adapter(name)
    except ImportError as exc:
        raise ImportError(f"{path}: {exc}; or pass framework='numpy'") from exc


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
    return name == "numpy" or any(sys.modules.get(package) is not None for package in FRAMEWORKS[name][1])


def source_framework(name: str) -> str:
    """``name`` when the process has imported that framework, else "numpy": a file never makes tensorfile import
    a framework (importing TensorFlow costs 600 MiB and changes process-wide state)."""
    return name if name in FRAMEWORKS and imported(name) else "numpy"


def convert_tree(value: Any, adapter: Adapter, path: str, options: Mapping[str, Any], max_depth: int) -> Any:
    """Hand a foreign file's NumPy arrays to ``adapter``'s framework, containers kept (and shared ones shared)."""
    from .formats.torch import Parameter

    def convert(array: np.ndarray) -> Any:
        record = {"parameter": True, "requires_grad": bool(array.requires_grad)} if isinstance(array, Parameter) else {}
        return to_framework(adapter, path, "tensor", np.asarray(array), record, options)

    return map_leaves(value, lambda node: isinstance(node, np.ndarray), convert, max_depth=max_depth, what=path)
