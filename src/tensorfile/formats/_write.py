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
from typing import Any, Callable, Mapping

import numpy as np

from ..atomic import atomic_write
from ..errors import UnsupportedTypeError
from ..tree import flatten

__all__ = ["FOREIGN_FORMATS", "write_foreign"]

#: format name -> what it is, for messages.
FOREIGN_FORMATS = {
    "npz": "a NumPy .npz file",
    "mxnet": "an MXNet nd.save file",
    "mxnet-np": "an MXNet npx.save file",
    "torch": "a torch.save file",
}


_KINDS = {"dict": "dict", "ordered_dict": "OrderedDict", "list": "list", "tuple": "tuple", "none": "None",
          "bool": "bool", "int": "int", "float": "float", "str": "str"}  # fmt: skip


def _kind(node: dict[str, Any]) -> str:
    return _KINDS.get(node.get("type", ""), str(node.get("type")))


def flat_tensors(obj: Any, target: str) -> tuple[list[str] | None, list[np.ndarray]]:
    """``obj`` as names (None for a list) and host arrays, when it is flat.

    Raises:
        UnsupportedTypeError: ``obj`` is nested, holds non-tensors, or has non-str keys.
    """
    flat = flatten(obj)
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


def write_foreign(
    obj: Any, path: str | os.PathLike[str], format: str, metadata: Mapping[str, str] | None,
    progress: Callable[[int, str], Any],
) -> None:  # fmt: skip
    """Write ``obj`` to ``path`` (atomically) in one of :data:`FOREIGN_FORMATS`.

    ``progress(total_bytes, description)`` is a context manager giving a callable
    (or None) that is told of bytes written.
    """
    target = FOREIGN_FORMATS[format]
    if metadata:
        raise UnsupportedTypeError(f"metadata: {target} has no place for metadata")
    name = os.path.basename(os.fspath(path))
    if format == "torch":
        from ._torch_write import write_torch

        flat = flatten(obj)
        total = sum(leaf.array.nbytes for leaf in flat.leaves)
        with atomic_write(path) as f, progress(total, f"saving {name}") as bar:
            write_torch(f, flat, bar)
        return
    names, arrays = flat_tensors(obj, target)
    total = sum(a.nbytes for a in arrays)
    with atomic_write(path) as raw, progress(total, f"saving {name}") as bar:
        f = io.BufferedWriter(raw, 1 << 20)  # type: ignore[arg-type]
        if format == "npz":
            from .npy import write_npz

            write_npz(f, names if names is not None else [f"arr_{i}" for i in range(len(arrays))], arrays, bar)
        else:
            from .mxnet import write_mxnet

            write_mxnet(f, names, arrays, np_semantics=format == "mxnet-np", progress=bar)
        f.flush()
        f.detach()
