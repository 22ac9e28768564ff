"""``tensorfile.save(..., format=...)`` for other tools' files: npz, MXNet, torch.

Each target holds less than a tensorfile file. ``.npz`` and MXNet files hold
a flat dict of str to tensor, a list or tuple of tensors (``arr_0``, ``arr_1``...
in a ``.npz``), or one tensor; a ``torch.save`` file holds any structure
tensorfile saves. Anything else raises :class:`UnsupportedTypeError` saying what
the target cannot hold. None of them has a place for user metadata.
"""

from __future__ import annotations

import io
import os
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np

from ..atomic import atomic_write
from ..errors import UnsupportedTypeError
from ..tree import Flattened, flatten

__all__ = ["flat_tensors", "flat_writer", "tree_writer"]

_KINDS = {"dict": "dict", "ordered_dict": "OrderedDict", "list": "list", "tuple": "tuple", "none": "None",
          "bool": "bool", "int": "int", "float": "float", "str": "str"}  # fmt: skip


def _kind(node: dict[str, Any]) -> str:
    return _KINDS.get(node.get("type", ""), str(node.get("type")))


def flat_tensors(obj: Any, target: str) -> tuple[list[str] | None, list[np.ndarray]]:
    """``obj`` as names (None for a list) and host arrays, when it is flat.

    Raises:
        UnsupportedTypeError: ``obj`` is nested, holds non-tensors, or has non-str keys.
    """
    flat = flatten(obj, tie_once=True)
    arrays = {leaf.name: leaf.array for leaf in flat.leaves}
    root = flat.root
    if root["type"] == "tensor":
        return None, [arrays[root["name"]]]
    if root["type"] in ("dict", "ordered_dict"):
        names, values = [], []
        for key, node in root["items"]:
            if key.get("type") != "str":
                raise UnsupportedTypeError(f"obj: {target} names arrays by str, not by the key {key.get('value')!r}")
            if node.get("type") != "tensor":
                raise UnsupportedTypeError(f"obj[{key['value']!r}]: {target} holds only tensors, not {_kind(node)}")
            names.append(key["value"])
            values.append(arrays[node["name"]])
        return names, values
    if root["type"] in ("list", "tuple"):
        for i, node in enumerate(root["items"]):
            if node.get("type") != "tensor":
                raise UnsupportedTypeError(f"obj[{i}]: {target} holds only tensors, not {_kind(node)}")
        return None, [arrays[node["name"]] for node in root["items"]]
    raise UnsupportedTypeError(f"obj: {target} holds tensors, a list of them or a dict of them, not {_kind(root)}")


#: ``write(obj, path, metadata, progress)``; progress(total_bytes, description) is a context manager
#: giving a callable (or None) told of bytes written.
WriteFn = Callable[[Any, "str | os.PathLike[str]", "Mapping[str, str] | None", Callable[[int, str], Any]], None]


def _no_metadata(target: str, metadata: Mapping[str, str] | None) -> None:
    if metadata:
        raise UnsupportedTypeError(f"metadata: {target} has no place for metadata")


def flat_writer(target: str, body: Callable[[BinaryIO, list[str] | None, list[np.ndarray], Any], None]) -> WriteFn:
    """A format's ``write`` for files of one tensor, a list or a flat dict (npz, MXNet).

    Args:
        target: the format, for messages (``"a NumPy .npz file"``).
        body: ``body(f, names or None for a list, arrays, progress)`` writes the file to ``f``.
    """

    def write(obj: Any, path: str | os.PathLike[str], metadata: Mapping[str, str] | None,
              progress: Callable[[int, str], Any]) -> None:  # fmt: skip
        _no_metadata(target, metadata)
        names, arrays = flat_tensors(obj, target)
        total = sum(a.nbytes for a in arrays)
        with atomic_write(path) as raw, progress(total, f"saving {os.path.basename(os.fspath(path))}") as bar:
            f = io.BufferedWriter(raw, 1 << 20)  # type: ignore[arg-type]
            body(f, names, arrays, bar)
            f.flush()
            f.detach()

    return write


def tree_writer(target: str, body: Callable[[BinaryIO, Flattened, Any], None]) -> WriteFn:
    """A format's ``write`` for files of any structure tensorfile saves (torch): ``body(f, flattened, progress)``."""

    def write(obj: Any, path: str | os.PathLike[str], metadata: Mapping[str, str] | None,
              progress: Callable[[int, str], Any]) -> None:  # fmt: skip
        _no_metadata(target, metadata)
        flat = flatten(obj, tie_once=True)  # other tools tie by their own means (torch: one storage)
        total = sum(leaf.array.nbytes for leaf in flat.leaves)
        with atomic_write(path) as f, progress(total, f"saving {os.path.basename(os.fspath(path))}") as bar:
            body(f, flat, bar)

    return write
